"""The site at gallery scale: N models × P prompts of saved results, from one real run.

    .venv/bin/python benchmarks/gallery_benchmark.py --models 120 --prompts 10
    .venv/bin/python benchmarks/gallery_benchmark.py --models 500 --prompts 20 --runs 1
    .venv/bin/python benchmarks/gallery_benchmark.py --smoke    (seconds, tiny model)

One results document (by default the demo site's SmolLM2 `fox` run: `make demo` first, or
give --source FILE.json, e.g. from `run_lens(...).save()`) is copied under N model names and
P prompt names and listed under `results:`, so the build renders N × P runs without any
lens work. Measured: build time, site bytes per run (everything but the site-wide assets/,
embed pages included), the widest prompt page's size, and in headless Chromium over HTTP
the time from navigation to its first drawn heatmap (cold: first load; warm: reloads), and
how many heatmaps are drawn up front. Compare within one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEMO_RUN = REPO / "site" / "data" / "smollm2-135m" / "fox.json"
FAMILIES = ("llama", "gemma", "qwen", "mistral", "phi", "olmo")


def write_gallery(source: dict[str, Any], folder: Path, models: int, prompts: int) -> Path:
    """N × P copies of ``source`` as saved results, and a manifest listing them."""
    results = folder / "results"
    results.mkdir(parents=True)
    for m in range(models):
        family = FAMILIES[m % len(FAMILIES)]
        name = f"{family}-{m // len(FAMILIES) + 1:03d}-{m:03d}"
        for p in range(prompts):
            document = copy.deepcopy(source)
            document["model"]["name"] = name
            document["model"]["model_type"] = family
            document["model"]["reference"] = f"org/{name}"
            document["prompt"]["name"] = f"prompt-{p:02d}"
            (results / f"{name}.{p:02d}.json").write_text(
                json.dumps(document, ensure_ascii=False, separators=(",", ":")),
                encoding="utf-8")
    manifest = folder / "gallery.yaml"
    manifest.write_text(
        f"site: {{title: Gallery of {models} models}}\nmodels: []\nresults:\n"
        "  - results/*.json\n", encoding="utf-8")
    return manifest


def site_bytes(site: Path) -> tuple[int, int]:
    """(bytes outside assets/, bytes of assets/)."""
    total = assets = 0
    for path in site.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            total += size
            if "assets" in path.relative_to(site).parts[:1]:
                assets += size
    return total - assets, assets


def first_heatmap(site: Path, page_path: str, chromium: str, runs: int) -> None:
    """Time to the first drawn heatmap of ``page_path``, cold then warm, over HTTP."""
    from playwright.sync_api import sync_playwright

    from _shared import static_server

    drawn_js = "() => document.querySelector('.heatmap .main-svg') !== null"
    count_js = ("() => [...document.querySelectorAll('.heatmap')]"
                ".filter(h => h.querySelector('.main-svg')).length")
    with static_server(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        for attempt in range(runs):
            started = time.perf_counter()
            page.goto(base + page_path, wait_until="commit")
            page.wait_for_function(drawn_js, timeout=120_000, polling=20)
            seconds = time.perf_counter() - started
            page.wait_for_load_state("load", timeout=120_000)
            heatmaps = page.evaluate("() => document.querySelectorAll('.heatmap').length")
            print(f"{'cold' if attempt == 0 else 'warm'} run {attempt + 1}: first heatmap "
                  f"in {seconds:.2f} s; {page.evaluate(count_js)} of {heatmaps} heatmaps "
                  "drawn at load", flush=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=120)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--source", type=Path, default=DEMO_RUN,
                        help="a results document to copy (default: the demo's SmolLM2 fox)")
    parser.add_argument("--runs", type=int, default=3, help="page loads to time (1 cold)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--keep", type=Path, help="build the gallery here and keep it")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny model's run, 4 models × 2 prompts, one page load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lensreport-gallery-") as folder:
        work = args.keep or Path(folder)
        if args.smoke:
            args.source = smoke_run(work / "tiny")
            args.models, args.prompts, args.runs = 4, 2, 1
        run(args, work)


def smoke_run(folder: Path) -> Path:
    """One run of a tiny random model, saved as the gallery's source."""
    from _shared import open_session, smoke_model

    import lensreport

    session = open_session(smoke_model(folder))
    result = lensreport.run_lens(session.loaded.model, session.loaded.tokenizer,
                                 "The quick brown fox jumps over the lazy", model_name="tiny")
    return result.save(folder / "run.json")


def run(args: argparse.Namespace, work: Path) -> None:
    from lensreport.commands.build import run_build
    from lensreport.manifest import load_manifest

    if not args.source.is_file():
        raise SystemExit(f"{args.source}: no such results file; run `make demo` first or "
                         "give --source FILE.json")
    source = json.loads(args.source.read_text(encoding="utf-8"))
    runs = args.models * args.prompts
    manifest = write_gallery(source, work, args.models, args.prompts)
    print(f"source run: {args.source.name}, {len(source['input_ids'])} tokens × "
          f"{len(source['layers'])} rows, {args.source.stat().st_size / 1e3:.0f} KB")
    started = time.perf_counter()
    run_build(load_manifest(manifest), work / "site")
    seconds = time.perf_counter() - started
    site = work / "site"
    pages, assets = site_bytes(site)
    widest = "prompts/prompt-00/index.html"
    print(f"{args.models} models × {args.prompts} prompts = {runs} runs: build {seconds:.1f} s "
          f"({seconds / runs * 1e3:.1f} ms/run)")
    print(f"site: {pages / 1e6:.1f} MB without assets ({pages / runs / 1e3:.1f} KB/run), "
          f"assets {assets / 1e6:.1f} MB; widest prompt page "
          f"{(site / widest).stat().st_size / 1e6:.2f} MB; index "
          f"{(site / 'index.html').stat().st_size / 1e3:.0f} KB")
    first_heatmap(site, widest, args.chromium, args.runs)


if __name__ == "__main__":
    main()
