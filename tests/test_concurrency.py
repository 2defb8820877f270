"""Processes that start together (a build beside its shards, on an empty weights cache), and
documents that are a function of their run's content only, whatever else is computed."""

from __future__ import annotations

import socket
import sys
import threading
import time
import types
from pathlib import Path

from conftest import wait_until, write_manifest
from lensreport.commands.build import BuildSummary, compute_results
from lensreport.manifest import load_manifest
from lensreport.models.references import ResolvedModel
from lensreport.plan import plan
from lensreport.results.documents import dumps
from lensreport.results.store import ResultsStore

TEXTS = ["The quick brown fox jumps over the lazy dog", "one two three",
         "Hello world! true True TRUE false and so on and so forth",
         "The capital of France is Paris, and the capital of Italy is"]


def _manifest(folder: Path, tiny_models) -> Path:
    # float32 and bfloat16: in a padded batch, the rounding of either moved a 4th digit of
    # some prompt (the documents were not the same before each prompt ran alone).
    prompts = "".join(f'  - {{name: p{i}, text: "{text}"}}\n' for i, text in enumerate(TEXTS))
    return write_manifest(folder, f"models:\n  - {{name: a, model: {tiny_models('gpt2')}}}\n"
                          f"  - {{name: b, model: {tiny_models('llama', 'sentencepiece')}, "
                          f"dtype: bfloat16}}\nprompts:\n{prompts}")


def test_a_prompt_alone_and_among_others_writes_the_same_document(tmp_path, tiny_models,
                                                                   weights_cache):
    manifest = load_manifest(_manifest(tmp_path, tiny_models))
    runs = plan(manifest).prompt_runs
    store = ResultsStore(tmp_path / "store")
    together = {run.names: dumps(document) for run, document in
                zip(runs, compute_results(manifest, runs, store, True, BuildSummary()))}
    for prompt in ("p0", "p1"):  # each alone (on both models: one load each)
        alone = [run for run in runs if run.prompt.name == prompt]
        documents = compute_results(manifest, alone, store, True, BuildSummary())
        assert [dumps(document) for document in documents] == \
            [together[run.names] for run in alone], prompt


def test_a_run_claimed_elsewhere_is_waited_for_and_read(tmp_path, tiny_models, weights_cache):
    """A run held by another process (here: a claim this test holds) is not computed: the
    build computes the others, waits, and reads it from the store; if its holder lets it go
    without writing it, the build computes it. No claim is left in the store."""
    manifest = load_manifest(_manifest(tmp_path, tiny_models))
    runs = plan(manifest).prompt_runs[:3]
    store = ResultsStore(tmp_path / "store")
    elsewhere = compute_results(manifest, [runs[0]], ResultsStore(tmp_path / "other"), False,
                                BuildSummary())[0]
    for holder_writes in (True, False):
        for entry in (tmp_path / "store").rglob("*.json"):
            entry.unlink()
        claim = store.claim(runs[0].key)
        assert claim is not None and store.claim(runs[0].key) is None  # held: not claimable
        summary, results = BuildSummary(), []
        build = threading.Thread(target=lambda: results.append(
            compute_results(manifest, runs, store, False, summary)))
        build.start()
        # The build computes the runs it could claim, then waits for the held one.
        wait_until(lambda: len(summary.computed) == 2 or not build.is_alive(), 120,
                   "the build to compute the runs it could claim")
        build.join(timeout=1.0)
        assert build.is_alive() and len(summary.computed) == 2, summary
        if holder_writes:
            store.put(runs[0].key, elsewhere)
        claim.release()
        build.join(timeout=120)
        assert not build.is_alive()
        expected = ([runs[0].names], 2) if holder_writes else ([], 3)
        assert (summary.cached, len(summary.computed)) == expected
        assert dumps(results[0][0]) == dumps(elsewhere)
        assert not list((tmp_path / "store").rglob("*.lock"))


def test_a_plain_build_and_two_shards_started_together(started_together, demo_site):
    """Two `--shard K/2` builds and a plain build, started at once on an empty weights
    cache, on the packaged SmolLM2 and Gemma-3 (assembled from its chunks, then converted):
    all succeed, each run is computed once, nothing staged remains, and the plain build's
    data files are the bytes of a sequential single build's (the demo build: one process,
    its own results store, these prompts among others)."""
    outcome = started_together
    assert outcome.empty_cache
    assert outcome.returncodes == [0, 0, 0], outcome.logs
    assert sum(outcome.computed) == 2 * 3, outcome.computed
    assert outcome.staged == [], outcome.staged
    assert outcome.converted == 2, outcome.logs  # each model converted once, by one process
    assert sum(log.count("assembling ") for log in outcome.logs) == 1, outcome.logs

    def data(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in (root / "data").rglob("*")
                if p.is_file()}

    together, single = data(outcome.site), data(demo_site)
    assert len(together) == 2 * 3  # a .json per run (the browser writes the CSV)
    assert [name for name in together if single.get(name) != together[name]] == []


def test_assembling_at_once_assembles_once_and_clears_a_dead_writers_staging(tmp_path,
                                                                             monkeypatch):
    """Two threads (each with its own lock, as two processes) assemble one chunked GGUF
    file at once: one assembles, the other waits and uses its file; what a killed writer
    left staged is removed, and nothing staged remains."""
    from lensreport.models.loading import _assemble  # (before: one shared .partial file)

    calls = []

    def assemble(path, overwrite=False):
        calls.append(path)
        time.sleep(0.3)  # long enough for the other thread to arrive
        Path(path).write_bytes(b"GGUF" * 1000)

    monkeypatch.setitem(sys.modules, "chunked_pkg", types.SimpleNamespace(assemble=assemble))
    folder = tmp_path / "packages" / "chunked_pkg"
    folder.mkdir(parents=True)
    dead = folder / f".m.gguf.partial-{socket.gethostname()}-{2 ** 22 + 1}-0123456789ab"
    dead.write_bytes(b"GG")  # a writer killed half-way (no pid is above 2 ** 22)
    resolved = ResolvedModel("gguf", str(folder), "m.gguf", "id", assemble_from="chunked_pkg")
    errors = []

    def run():
        try:
            _assemble(resolved)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(calls) == 1
    assert (folder / "m.gguf").read_bytes() == b"GGUF" * 1000
    assert sorted(p.name for p in folder.iterdir()) == ["m.gguf", "m.gguf.lock"]
