"""The Jacobian lens against its peer, TransformerLens 4.3's JacobianLens (installed by
`make test` into .venv/peers, run in its own process with import stubs): it loads and
validates lensreport's lens file, its readout equals lensreport's per cell, and its fit
equals lensreport's estimator on the same token ids."""

from __future__ import annotations

import json
from lensreport.results.documents import loads
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, run_cli, write_manifest

PEERS = REPO / ".venv" / "peers"
SKIP, CONTEXT = 4, 24
DOCUMENTS = ["The quick brown fox jumps over the lazy dog and runs far away.",
             "The capital of France is Paris, and the capital of Italy is Rome.",
             "one two three four five six seven eight nine ten eleven twelve"]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_transformer_lens_reads_our_lens_and_fits_the_same(family, tmp_path, tiny_models,
                                                           weights_cache):
    assert (PEERS / "transformer_lens").is_dir(), "TransformerLens missing: run `make test`"
    folder = tiny_models(family, "sentencepiece" if family == "llama" else "byte_level")
    (tmp_path / "corpus.txt").write_text("\n\n".join(DOCUMENTS) + "\n")
    manifest = write_manifest(tmp_path, f"""
        lens: {{kinds: [logit, jacobian], jacobian: j.pt}}
        models:
          - {{name: m, model: {folder}}}
        prompts:
          - {{name: fox, text: "The quick brown fox jumps over the lazy dog"}}
    """)
    fit = run_cli("fit-lens", manifest, "--model", "m", "--kind", "jacobian", "--corpus",
                  tmp_path / "corpus.txt", "--context", CONTEXT, "--skip-first", SKIP,
                  "--out", tmp_path / "j.pt")
    assert fit.returncode == 0, fit.stderr
    build = run_cli("build", manifest)
    assert build.returncode == 0, build.stderr
    document = loads((tmp_path / "site/data/m/fox.jacobian.json").read_text())
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"input_ids": document["input_ids"],
                               "topk_ids": document["topk_ids"], "documents": DOCUMENTS,
                               "skip": SKIP, "context": CONTEXT}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "tests" / "peers" / "stubs"), str(PEERS)])}
    peer = subprocess.run([sys.executable, str(REPO / "tests/peers/transformer_lens_jacobian.py"),
                           str(folder), str(tmp_path / "j.pt"), str(job), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert peer.returncode == 0, peer.stderr[-3000:]
    theirs = json.loads((tmp_path / "tl.json").read_text())
    layers = len(document["layers"]) - 1
    assert theirs["source_layers"] == list(range(layers - 1))

    # Readout: TransformerLens's layer l is our row l + 1; its last layer is the model's.
    for layer, entropy in theirs["entropy"].items():
        row = int(layer) + 1
        assert document["entropy"][row] == pytest.approx(entropy, abs=2e-3), row
        # Each cell's top-k, token by token (ids and probabilities; ties cannot matter).
        for ours, peer in zip(document["topk_probs"][row], theirs["topk_probs"][layer]):
            assert ours == pytest.approx(peer, rel=2e-3, abs=1e-6), row
    assert document["entropy"][0] is None

    # Fit: TransformerLens prepends BOS where lensreport's tokenizer does not; on its ids,
    # our estimator gives its matrices.
    from lensreport.lens.fit.jacobian import prompt_jacobians
    from lensreport.manifest import load_manifest

    import tiny

    session = tiny.open_session(load_manifest(manifest))
    ours: dict[int, torch.Tensor] = {}
    for ids in theirs["fit_ids"]:
        for layer, matrix in prompt_jacobians(session, ids, list(range(layers - 1)), SKIP,
                                              8).items():
            ours[layer] = ours.get(layer, 0) + matrix / len(theirs["fit_ids"])
    fitted = torch.load(tmp_path / "tl_fit.pt", weights_only=True)
    assert fitted["n_prompts"] == theirs["fit_n_prompts"] == len(DOCUMENTS)
    for layer, matrix in ours.items():
        reference = fitted["J"][layer].float()
        error = (matrix - reference).norm() / reference.norm()
        assert error <= 5e-3, (layer, float(error))
