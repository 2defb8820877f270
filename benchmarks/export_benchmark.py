"""Static export (site.export) cost: rendering a site with and without static figures, per
figure, by number of browser tabs, and from the figure cache.

    python benchmarks/export_benchmark.py                 # the demo (its runs must be cached:
                                                          #   make demo first)
    python benchmarks/export_benchmark.py --smoke         # a tiny random Llama, in seconds

Rendering reads documents only, so every measurement is ``render_site`` on the same
documents: without export; with PNG + SVG + PDF and no cache (``--tabs`` tabs at once);
and again with every figure in the cache (a template-only rebuild).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import REPO, SMOKE_HELP, smoke_model  # noqa: E402

FORMATS = ("png", "svg", "pdf")


def load(manifest_path: Path):
    """The manifest and its documents from the results store (computed where missing)."""
    from lensreport.commands.build import BuildSummary, compute_results, default_cache_dir
    from lensreport.manifest import load_manifest
    from lensreport.plan import CorpusRun, plan
    from lensreport.results.store import ResultsStore

    manifest = load_manifest(manifest_path)
    runs = plan(manifest).runs
    store = ResultsStore(default_cache_dir(manifest))
    found = compute_results(manifest, runs, store, False, BuildSummary())
    prompts = {run.names: doc for run, doc in zip(runs, found) if not isinstance(run, CorpusRun)}
    corpora = {run.names: doc for run, doc in zip(runs, found) if isinstance(run, CorpusRun)}
    return manifest, prompts, corpora


def render(manifest, prompts, corpora, formats, store=None) -> tuple[float, int]:
    """Seconds to render the site into a fresh folder, and how many figure files it wrote."""
    from lensreport.site.pages import render_site

    manifest = dataclasses.replace(manifest, site=dataclasses.replace(manifest.site,
                                                                      export=formats))
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        render_site(manifest, prompts, Path(out), corpus_documents=corpora, store=store)
        seconds = time.perf_counter() - started
        return seconds, sum(1 for _ in (Path(out) / "figures").rglob("*.*")) if formats else 0


def browser_start() -> float:
    """Seconds to start and stop kaleido's browser with nothing to render."""
    import kaleido

    from lensreport.site.export import find_browser

    async def run() -> None:
        async with kaleido.Kaleido(n=1, mathjax=False, path=find_browser()):
            pass

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "prompts" / "demo.yaml")
    parser.add_argument("--tabs", default="1,2,3", help="browser tabs to try (comma-separated)")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    from lensreport.results.store import ResultsStore
    from lensreport.site import export

    work = Path(tempfile.mkdtemp(prefix="export-benchmark-"))
    try:
        if args.smoke:
            model = smoke_model(work / "model")
            args.manifest = work / "prompts.yaml"
            args.manifest.write_text(
                f"models:\n  - {{name: tiny, model: {model}, lens: {{kinds: [logit, raw]}}}}\n"
                "prompts:\n  - {name: fox, text: The quick brown fox jumps over the lazy}\n"
                "  - {name: add, text: 'def add(a, b): return a'}\n")
            args.tabs = "2"
        manifest, prompts, corpora = load(args.manifest)
        print(f"{len(prompts)} heatmap document(s), {len(corpora)} corpus curve document(s); "
              f"formats {', '.join(FORMATS)}\n")
        start = browser_start()
        print(f"browser start and stop: {start:.2f} s\n")
        plain, _ = render(manifest, prompts, corpora, ())
        print("| measurement | files | seconds | s per file, browser start excluded |")
        print("|---|---:|---:|---:|")
        print(f"| render, no export | 0 | {plain:.2f} | – |")
        for tabs in [int(t) for t in args.tabs.split(",")]:
            export.TABS = tabs
            seconds, files = render(manifest, prompts, corpora, FORMATS)
            print(f"| render + export, cold, {tabs} tab(s) | {files} | {seconds:.2f} | "
                  f"{max(0.0, seconds - plain - start) / files:.3f} |")
        store = ResultsStore(work / "store")
        render(manifest, prompts, corpora, FORMATS, store)  # fills the cache
        seconds, files = render(manifest, prompts, corpora, FORMATS, store)
        print(f"| render + export, all cached | {files} | {seconds:.2f} | "
              f"{max(0.0, seconds - plain) / files:.4f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
