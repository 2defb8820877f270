"""Whole-build targets, each build in a fresh process as a user runs it:

    .venv/bin/python benchmarks/build_benchmark.py            (minutes: the packaged models)
    .venv/bin/python benchmarks/build_benchmark.py --smoke    (seconds: tiny random models)

* demo manifest (prompts/demo.yaml, with its corpus and tuned lens): unchanged rebuild,
  adding one prompt, a template-only change (seconds);
* the embed page of a 64-token prompt on SmolLM2 (31 layers, top-5), excluding plotly.js;
* peak RSS of a build for a 1,024-token prompt on Gemma-3-270M, from its GGUF file
  (an empty weights cache) and from the weights cache.

A build is lensreport.commands.build.run_build on lensreport.manifest.load_manifest (what
`lensreport build` runs), in a child process (this script with --child-build), timed by the
parent, with the peak RSS the child reports for itself. --smoke uses two tiny random Llamas
and runs the builds that load a model in this process (their peak RSS then counts what this
process holds); the unchanged rebuild still runs in a child.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

from _shared import CORPUS, PACKAGED, REPO, SMOKE_HELP, TEXT, smoke_model, tokenizer_and_config

TEMPLATES = REPO / "lensreport" / "site" / "templates"
DEMO_LENS = REPO / "prompts" / "lenses" / "smollm2-135m"


def build_site(manifest: Path, clean: bool = False) -> None:
    """One build, as `lensreport build MANIFEST [--clean]` runs it."""
    from lensreport.commands.build import run_build
    from lensreport.manifest import load_manifest

    run_build(load_manifest(manifest), clean=clean)


def build(manifest: Path, clean: bool = False, env: dict[str, str] | None = None,
          in_process: bool = False) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one build."""
    if in_process:
        with _environment(env or {}):
            _reset_peak_rss()
            started = time.perf_counter()
            build_site(manifest, clean)
            return time.perf_counter() - started, _peak_rss_mb()
    peak = manifest.parent / ".peak-rss-mb"
    peak.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child-build", str(manifest), "--peak-file", str(peak)]
    started = time.perf_counter()
    process = subprocess.Popen(command + (["--clean"] if clean else []),
                               env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"build failed: {manifest}")
    # The child's own high-water mark: wait4's ru_maxrss would also count this process's,
    # which the child inherits through fork/vfork before exec.
    return seconds, float(peak.read_text()) if peak.is_file() else usage.ru_maxrss / 1024


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM restarts from VmRSS
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prompt_of(tokens: int, reference: str) -> tuple[str, int]:
    """Text that is exactly ``tokens`` tokens long for a model, and the model's rows."""
    tokenizer, config = tokenizer_and_config(reference)
    ids = tokenizer(TEXT * 100, add_special_tokens=False)["input_ids"]
    specials = len(tokenizer("x")["input_ids"]) - len(tokenizer("x", add_special_tokens=False)
                                                       ["input_ids"])
    from lensreport.models.loading import text_config

    return tokenizer.decode(ids[:tokens - specials]), text_config(config).num_hidden_layers + 1


def write_yaml(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def real_demo(folder: Path) -> Path:
    """The demo manifest with what it reads (corpus, tuned lens), copied into ``folder``."""
    if not (DEMO_LENS / "params.pt").is_file():
        raise SystemExit(f"{DEMO_LENS} is missing: the demo's tuned lens is trained by "
                         "`make demo` (about 6 minutes) before this benchmark can build it")
    shutil.copytree(REPO / "prompts", folder,
                    ignore=shutil.ignore_patterns("site", ".lensreport-cache", "*.pt.tmp"))
    return folder / "demo.yaml"


def smoke_demo(folder: Path) -> Path:
    """A demo-shaped manifest on two tiny models: two lenses, three prompts, a corpus."""
    smoke_model(folder / "models" / "tiny-a", seed=0)
    smoke_model(folder / "models" / "tiny-b", seed=1)
    (folder / "corpus").mkdir()
    shutil.copy(CORPUS, folder / "corpus" / "eval.txt")
    manifest = folder / "demo.yaml"
    write_yaml(manifest, {
        "site": {"title": "Smoke demo"},
        "lens": {"top_k": 5},
        "models": [{"name": "tiny-a", "model": "./models/tiny-a",
                    "lens": {"kinds": ["logit", "raw"]}},
                   {"name": "tiny-b", "model": "./models/tiny-b"}],
        "prompts": [{"name": "fox", "text": "The quick brown fox jumps over the lazy",
                     "target": " dog"},
                    {"name": "capital", "text": "The capital of France is", "target": " Paris"},
                    {"name": "counting", "text": "one, two, three, four,"}],
        "corpora": [{"name": "eval", "path": "corpus/eval.txt", "max_tokens": 64,
                     "context": 32}]})
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    parser.add_argument("--child-build", type=Path, metavar="MANIFEST", help=argparse.SUPPRESS)
    parser.add_argument("--clean", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peak-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_build:
        build_site(args.child_build, args.clean)
        if args.peak_file:
            args.peak_file.write_text(f"{_peak_rss_mb():.1f}")
        return
    smoke = args.smoke
    work = Path(tempfile.mkdtemp(prefix="lensreport-bench-"))
    rows = []
    demo = smoke_demo(work / "demo") if smoke else real_demo(work / "demo")
    build(demo, in_process=smoke)  # warm the results and weights caches
    # A child process in --smoke too (it loads no model: a second or two), so the child's
    # path is checked as well.
    rows.append(("demo: unchanged rebuild", *build(demo)))
    manifest = yaml.safe_load(demo.read_text(encoding="utf-8"))
    manifest["prompts"].append({"name": f"added-{time.time_ns()}",
                                "text": "Water is made of hydrogen and"})
    write_yaml(demo, manifest)
    rows.append(("demo: add one prompt (both models reloaded)", *build(demo, in_process=smoke)))
    theme = demo.parent / "theme"
    theme.mkdir()
    (theme / "index.html").write_text((TEMPLATES / "index.html").read_text()
                                      .replace("{% block content %}",
                                               "{% block content %}<p>x</p>"))
    manifest["site"]["theme_dir"] = "theme"
    write_yaml(demo, manifest)
    rows.append(("demo: template-only change", *build(demo, in_process=smoke)))

    if smoke:
        embed_model = ("tiny-a", str(demo.parent / "models" / "tiny-a"))
        long_model, long_tokens = ("tiny-b", str(demo.parent / "models" / "tiny-b")), 256
        sources = ("its folder, an empty weights cache", "its folder again (--clean)")
    else:
        embed_model = ("smollm2", PACKAGED["smollm2"])
        long_model, long_tokens = ("gemma-3", PACKAGED["gemma"]), 1024
        sources = ("the GGUF file", "the weights cache")
    embed = work / "embed" / "prompts.yaml"
    embed.parent.mkdir()
    embed_text, embed_rows = prompt_of(64, embed_model[1])
    write_yaml(embed, {"models": [{"name": embed_model[0], "model": embed_model[1]}],
                       "prompts": [{"name": "p64", "text": embed_text}]})
    build(embed, in_process=smoke)
    page = embed.parent / "site" / "embed" / embed_model[0] / "p64.html"

    long = work / "long" / "prompts.yaml"
    long.parent.mkdir()
    write_yaml(long, {"models": [{"name": long_model[0], "model": long_model[1]}],
                      "prompts": [{"name": f"p{long_tokens}",
                                   "text": prompt_of(long_tokens, long_model[1])[0]}]})
    fresh = {"LENSREPORT_CACHE": str(work / "fresh-weights")}
    rows.append((f"{long_model[0]} {long_tokens:,} tokens, from {sources[0]}",
                 *build(long, env=fresh, in_process=smoke)))
    rows.append((f"{long_model[0]} {long_tokens:,} tokens, from {sources[1]}",
                 *build(long, clean=True, env=fresh, in_process=smoke)))

    print("| measurement | seconds | peak RSS MB |\n|---|---:|---:|")
    for name, seconds, rss in rows:
        print(f"| {name} | {seconds:.2f} | {rss:.0f} |")
    print(f"\nembed page, 64 tokens × {embed_rows} layers × top-5: "
          f"{page.stat().st_size / 1024:.1f} KB (plotly.min.js excluded; shared by the whole "
          "site)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
