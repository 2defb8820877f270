"""The benchmark scripts (benchmarks/) in their --smoke mode: each runs its real code path
end to end on tiny random models, so a package change that breaks a benchmark fails here.

The scripts start together (each spends most of its few seconds importing torch) and
each test waits for its own; the figures each script reports must all be in its output.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = ("lens_benchmark.py", "scale_benchmark.py", "build_benchmark.py",
           "jacobian_benchmark.py", "decompose_benchmark.py", "device_check.sh",
           "first_view_benchmark.py")
N = r"\d+(?:\.\d+)?"  # a reported figure


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple]]:
    """Every script's `--smoke` run, started at once: script -> (process, stdout, stderr)."""
    runs = {}
    for script in SCRIPTS:
        folder = tmp_path_factory.mktemp(script.rpartition(".")[0])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "LENSREPORT_CACHE": str(folder / "cache"),
               "TMPDIR": str(folder), "PYTHON": sys.executable}
        command = [sys.executable, str(BENCHMARKS / script), "--smoke"]
        if script.endswith(".sh"):  # it finds Python ($PYTHON) and writes into --out
            command = ["sh", str(BENCHMARKS / script), "--smoke", "--out", str(folder / "out")]
        out, err = folder / "stdout.txt", folder / "stderr.txt"
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(command, cwd=folder, env=env, stdout=stdout,
                                       stderr=stderr)
        runs[script] = (process, out, err)
    yield runs
    for process, _, _ in runs.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def output_of(smoke: dict[str, tuple], script: str) -> str:
    process, out, err = smoke[script]
    try:
        process.wait(timeout=240)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    stdout = out.read_text()
    assert process.returncode == 0, (f"{script} --smoke exited {process.returncode}\n{stdout}\n"
                                     f"{err.read_text()[-4000:]}")
    return stdout


def lines_matching(output: str, *patterns: str) -> None:
    for pattern in patterns:
        assert re.search(pattern, output, re.MULTILINE), \
            f"no line matches {pattern!r} in:\n{output}"


def test_lens_benchmark(smoke):
    output = output_of(smoke, "lens_benchmark.py")
    lines_matching(
        output,
        rf"^# tiny-llama \(smoke\): LlamaForCausalLM, 3 layers, vocab \d+, d 32, float32, .*"
        rf"load {N} s$",
        r"^\| tokens \| \(a\) floor s \| \(b\) lens s \| \(c\) naive s \| b/a \| c/b "
        r"\| \(b\) peak MB \| \(c\) peak MB \|$",
        # (a), (b), (c), both ratios and both memory figures
        rf"^\| 8 \| {N} \| {N} \| {N} \| {N} \| {N} \| -?{N} \| -?{N} \|$",
        # the naive approach skipped where it would need too much memory
        rf"^\| 64 \| {N} \| {N} \| skipped \(needs ~\d+ MB\) \| {N} \| – \| -?{N} \| – \|$",
        # the patchscope, with and without its prefix cache
        r"^## patchscope \(target prompt: \d+ tokens\)$",
        rf"^\| 64 \| {N} \| {N} \| {N} \| {N} \| {N} \|$")


def test_decompose_benchmark(smoke):
    output = output_of(smoke, "decompose_benchmark.py")
    lines_matching(
        output,
        r"^# tiny-llama \(smoke\): LlamaForCausalLM, 3 layers, vocab \d+, d 32, float32, .*",
        r"^\| tokens \| \(a\) lens s \| \(b\) \+DLA s \| \(c\) sublayer s \| b/a \| c/a \|$",
        rf"^\| 16 \| {N} \| {N} \| {N} \| {N} \| {N} \|$")


@pytest.mark.browser
def test_scale_benchmark(smoke):
    output = output_of(smoke, "scale_benchmark.py")
    lines_matching(
        output,
        r"^## corpus$",
        rf"^\| tiny-llama \| 128 \| 4 \| {N} \| {N} \| {N} \| {N} \|$",
        r"^## train$",
        rf"^\| tiny-llama \| \d+ \| {N} \| {N} \| {N} \|$",
        r"^## pages$",
        rf"^build: {N} s$",
        rf"^prompt page \(1200 tokens x 4 layers\), first view: {N} MB \({N} MB gzipped\); "
        rf"fetched later: {N} MB \({N} MB gzipped\)$",
        r"^32-token embed page: \d+ KB$",
        rf"^run 1: first heatmap drawn in {N} s; all metrics loaded in {N} s$")


def test_build_benchmark(smoke):
    output = output_of(smoke, "build_benchmark.py")
    lines_matching(
        output,
        r"^\| measurement \| seconds \| peak RSS MB \|$",
        *(rf"^\| {re.escape(name)} \| {N} \| {N} \|$" for name in (
            "demo: unchanged rebuild", "demo: add one prompt (both models reloaded)",
            "demo: template-only change",
            "tiny-b 256 tokens, from its folder, an empty weights cache",
            "tiny-b 256 tokens, from its folder again (--clean)")),
        rf"^embed page, 64 tokens × 4 layers × top-5: {N} KB \(plotly.min.js excluded")


def test_jacobian_benchmark(smoke):
    output = output_of(smoke, "jacobian_benchmark.py")
    lines_matching(
        output,
        r"^# tiny-llama \(smoke\): 3 layers, d 32, 24 tokens, skip_first 4, dim_batch 8: 4 "
        r"backward passes per prompt, cpu$",
        r"^\| \(a\) floor s/prompt \| \(b\) fit s/prompt \| b/a \| \(c\) TransformerLens "
        r"s/prompt \| c/b \|$",
        # TransformerLens runs too (make test installs it beside the suite)
        rf"^\| {N} \| {N} \| {N} \| {N} \| {N} \|$")


@pytest.mark.browser
def test_first_view_benchmark(smoke):
    output = output_of(smoke, "first_view_benchmark.py")
    lines_matching(
        output,
        rf"^prompt page: {N} MB \({N} MB gzipped\)$",
        rf"^assets/plotly-full.min.js: {N} MB \({N} MB gzipped\)$",
        rf"^assets/plotly.min.js: {N} MB \({N} MB gzipped\)$",
        r"^\| variant \| first heatmap painted s, median \(min–max\) \| inserted s \| "
        r"DOMContentLoaded s \| painted / before \|$",
        *(rf"^\| {re.escape(variant)} \| {N} \({N}–{N}\) \| {N} \| {N} \| {N} \|$"
          for variant in ("before", "+cartesian", "+defer", "+labels")))


def test_device_check(smoke):
    """benchmarks/device_check.sh --smoke: the GPU run's code on the CPU, tiny shapes; its
    table has a row per model, dtype and length, and the features this lensreport lacks are
    skipped with a line (never silently)."""
    output = output_of(smoke, "device_check.sh")
    out = smoke["device_check.sh"][1].parent / "out"
    table = (out / "device_check.md").read_text(encoding="utf-8")
    written = json.loads((out / "device_check.json").read_text(encoding="utf-8"))
    runs = {(r["model"], r["dtype"], r["tokens"]) for r in written["lens"]}
    assert runs == {(model, dtype, tokens) for dtype in ("bfloat16", "float32")
                    for model, tokens in (("gemma-3-tiny", 16), ("gemma-3-tiny", 48),
                                          ("llama-tiny", 16))}
    for r in written["lens"]:
        assert r["floor_s"] > 0 and r["lens_s"] > 0 and r["rows"] == 3, r
        lines_matching(table, rf"^\| {r['model']} \| [^|]+ \| {r['dtype']} \| {r['tokens']} "
                              rf"\| 3 \| {N} \| {N} \| {N} \| {N} \| – / – / – \|$")
    from lensreport.api import run_lens
    from lensreport.lens.kinds import lens_names

    whats = {r["what"] for r in written["extras"]}
    assert "logit lens (run_lens)" in whats
    for feature, present in (("patchscope", "patchscope" in lens_names()),
                             ("decomposition", "decompose" in inspect.signature(
                                 run_lens).parameters)):
        assert any(feature in what for what in whats) == present, whats
        if not present:
            lines_matching(output, rf"^{feature}: not in this lensreport .*: skipped$")
