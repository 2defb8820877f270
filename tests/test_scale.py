"""Past one machine: accelerate's big-model loading, shards, and a shared results store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny
from conftest import SMOLLM2, lensreport_command, run_cli, wait_until, write_manifest
from lensreport.plan import shard_runs
from lensreport.manifest import load_manifest

TEXT = "The quick brown fox jumps over the lazy dog"


def test_offloaded_model_gives_the_same_numbers(tmp_path, tiny_models, weights_cache):
    folder = tiny_models("llama", "sentencepiece")
    manifest = load_manifest(write_manifest(tmp_path, f"""
        models:
          - {{name: memory, model: {folder}}}
          - name: offloaded
            model: {folder}
            device_map: auto
            max_memory: {{cpu: 200KB}}
            offload_folder: offload
        prompts:
          - {{name: p, text: "{TEXT}", target: " dog"}}
    """))
    documents = {}
    for spec in manifest.models:
        session = tiny.open_session(manifest, spec)
        documents[spec.name], _ = tiny.prompt_document(session, manifest.prompts[0])
    placed = documents["offloaded"]["model"]["device_map"]
    assert placed and placed.get("cpu") and placed.get("disk"), placed  # really split
    # (safetensors weights are read from their own file when offloaded: nothing is copied)
    memory, offloaded = documents["memory"], documents["offloaded"]
    assert memory["topk_ids"] == offloaded["topk_ids"]
    for field in ("entropy", "kl_to_final", "topk_probs", "target_prob", "next_token_prob"):
        a = np.array(memory[field], dtype=float)  # null (no next token) -> nan
        b = np.array(offloaded[field], dtype=float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), field
        assert np.nanmax(np.abs(a - b)) <= 1e-5, field


def test_device_map_without_accelerate_is_one_clear_line(tmp_path, tiny_models, weights_cache,
                                                         monkeypatch):
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: big, model: {tiny_models("gpt2")}, device_map: auto}}
        prompts:
          - {{name: p, text: "{TEXT}"}}
    """)
    # As where accelerate is not installed: `import accelerate` raises ImportError.
    monkeypatch.setitem(sys.modules, "accelerate", None)
    result = run_cli("build", manifest)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: model 'big': device_map needs the accelerate package (pip install "
        "accelerate), or remove device_map to load the model on one device")


def test_shard_assignment_is_stable_and_loads_models_few_times(tmp_path, tiny_models):
    manifest = load_manifest(write_manifest(tmp_path, f"""
        models:
          - {{name: a, model: {tiny_models("gpt2")}}}
          - {{name: b, model: {tiny_models("llama", "sentencepiece")}}}
          - {{name: c, model: {tiny_models("qwen2")}}}
        prompts:
          - {{name: p1, text: one}}
          - {{name: p2, text: two}}
          - {{name: p3, text: three}}
          - {{name: p4, text: four}}
    """))
    from lensreport.plan import plan

    runs = plan(manifest).prompt_runs
    for shards in (2, 3, 5, 12):
        parts = [shard_runs(runs, k, shards) for k in range(1, shards + 1)]
        assert sorted(r.key for part in parts for r in part) == sorted(r.key for r in runs)
        assert parts == [shard_runs(runs, k, shards) for k in range(1, shards + 1)]
        loads = sum(len({r.model.name for r in part}) for part in parts)
        assert loads <= max(3, shards) + 2, (shards, loads)
    assert [len({r.model.name for r in shard_runs(runs, k, 3)}) for k in (1, 2, 3)] == [1, 1, 1]


def _shard_manifest(folder: Path, tiny_models, store: str) -> Path:
    return write_manifest(folder, f"""
        cache_dir: {store}
        models:
          - {{name: a, model: {tiny_models("gpt2")}}}
          - {{name: b, model: {tiny_models("llama", "sentencepiece")}}}
        prompts:
          - {{name: p1, text: "The quick brown fox"}}
          - {{name: p2, text: "The capital of France is", target: " Paris"}}
          - {{name: p3, text: "one two three four"}}
        corpora:
          - {{name: docs, path: corpus.txt, max_tokens: 30, context: 16}}
    """)


@pytest.mark.parametrize("store", ["folder", "file-url"])
def test_three_shards_then_render_equal_one_build(store, tmp_path, tiny_models,
                                                  weights_cache):
    (tmp_path / "corpus.txt").write_text("The quick brown fox jumps.\n\nOne two three four.\n")
    location = str(tmp_path / "store") if store == "folder" else (tmp_path / "store").as_uri()
    manifest = _shard_manifest(tmp_path, tiny_models, location)
    processes = [subprocess.Popen(lensreport_command() + ["build", str(manifest), "--shard",
                                                          f"{k}/3"],
                                  stderr=subprocess.PIPE, text=True) for k in (1, 2, 3)]
    logs = [p.communicate(timeout=600)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], logs
    computed = [int(line.split(" run(s) computed")[0].rsplit(": ", 1)[1])
                for log in logs for line in log.splitlines() if "run(s) computed" in line]
    assert sum(computed) == 2 * 3 + 2  # every run computed exactly once, in some shard
    assert not (tmp_path / "site").exists()  # shards render nothing
    result = run_cli("build", manifest, "--no-compute", "--site-dir", tmp_path / "sharded")
    assert result.returncode == 0, result.stderr
    assert "0 run(s) computed" in result.stderr
    single = _shard_manifest(tmp_path / "single", tiny_models, "single-store")
    (tmp_path / "single" / "corpus.txt").write_text((tmp_path / "corpus.txt").read_text())
    result = run_cli("build", single, "--site-dir", tmp_path / "one-process")
    assert result.returncode == 0, result.stderr

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    sharded, whole = tree(tmp_path / "sharded"), tree(tmp_path / "one-process")
    assert sharded.keys() == whole.keys()
    assert [name for name in sharded if sharded[name] != whole[name]] == []


def test_no_compute_lists_what_is_missing(tmp_path, tiny_models, weights_cache):
    (tmp_path / "corpus.txt").write_text("The quick brown fox jumps.\n")
    manifest = _shard_manifest(tmp_path, tiny_models, "store")
    assert run_cli("build", manifest, "--shard", "1/2").returncode == 0
    result = run_cli("build", manifest, "--no-compute")
    assert result.returncode == 1
    assert "run(s) are not in the results store" in result.stderr
    assert "(b, p1, logit lens)" in result.stderr
    assert not (tmp_path / "site").exists()
    result = run_cli("build", manifest, "--shard", "4/3")
    assert result.returncode == 2 and "write K/N with 1 <= K <= N" in result.stderr


@pytest.mark.slow
def test_a_killed_shard_is_completed_by_a_rerun(tmp_path, weights_cache):
    """SIGKILL in the middle of a shard's work: no entry reads as valid unless whole, and
    running the shard again fills the store."""
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 15)
    manifest = write_manifest(tmp_path, f"""
        cache_dir: {(tmp_path / "store").as_uri()}
        models:
          - name: smol
            model: {SMOLLM2}
        prompts:
          - {{name: short, text: "The quick brown fox"}}
          - {{name: long1, text: "{text}"}}
          - {{name: long2, text: "{text} again"}}
    """)
    store = tmp_path / "store"
    process = subprocess.Popen(lensreport_command() + ["build", str(manifest), "--shard", "1/1"],
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        # Prompts run shortest first: once the short prompt's entry is stored, the process is
        # in the work on the long ones.
        wait_until(lambda: process.poll() is not None or list(store.rglob("*.json")), 300,
                   "the first result in the store")
        assert process.poll() is None, "the shard finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        stderr = process.stderr.read()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, stderr
    assert len(list(store.rglob("*.json"))) < 3  # killed before the shard was done
    for entry in (tmp_path / "store").rglob("*.json"):
        json.loads(entry.read_text())  # whatever is there is whole
    again = run_cli("build", manifest, "--shard", "1/1")
    assert again.returncode == 0, again.stderr
    result = run_cli("build", manifest, "--no-compute")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "prompts" / "long2" / "index.html").is_file()
