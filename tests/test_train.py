"""train-lens on a tiny model: deterministic for a seed, resumes from its checkpoint to the
very same lens, writes the tuned-lens format, and the CLI prints the held-out table."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace

import pytest
import torch

import tiny
from conftest import run_cli, write_manifest
from lensreport.lens.fit import tuned as training
from lensreport.lens.corpus import CorpusSource
from lensreport.manifest import load_manifest
from lensreport.manifest.checks import resolve_model

TEXT = ("The quick brown fox jumps over the lazy dog. The capital of France is Paris, and "
        "the capital of Italy is Rome. one two three four five six seven eight nine ten.")


@pytest.fixture
def setup(tmp_path, tiny_models, weights_cache):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"{TEXT} ({i})" for i in range(40)), encoding="utf-8")
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: tiny, model: {tiny_models("llama", "sentencepiece")}}}
        prompts:
          - {{name: fox, text: "The quick brown fox"}}
    """)
    loaded = load_manifest(manifest)
    spec = loaded.models[0]
    source = CorpusSource(path=corpus)

    def train(folder):
        return training.train_lens(spec.request, resolve_model(loaded, spec), source, folder,
                                   SETTINGS)
    train.manifest, train.source = loaded, source
    train.spec, train.resolved = spec, resolve_model(loaded, spec)
    return train


SETTINGS = training.TrainSettings(tokens=400, context=32, tokens_per_step=64,
                                  held_out_tokens=64, checkpoint_every=2, seed=3)


def _params(folder):
    return torch.load(folder / "params.pt", weights_only=True)


def test_same_seed_same_lens_and_resume_gives_the_same_lens(setup, tmp_path, monkeypatch):
    train = setup
    report = train(tmp_path / "a")
    assert report["tokens"] == 400 and report["steps"] == len(report["loss_per_step"]) >= 4
    again = train(tmp_path / "b")
    first, second = _params(tmp_path / "a"), _params(tmp_path / "b")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert any(float(first[k].abs().max()) > 0 for k in first)  # it trained
    assert report["loss_per_step"] == again["loss_per_step"]

    # Interrupted in step 4 (the checkpoint holds step 2), then resumed.
    real_step, calls = training._train_step, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "c")
    monkeypatch.setattr(training, "_train_step", real_step)
    assert torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=False)["state"]["step"] == 2
    resumed = train(tmp_path / "c")
    assert resumed["loss_per_step"] == report["loss_per_step"]
    third = _params(tmp_path / "c")
    assert all(torch.allclose(first[k], third[k], atol=1e-6) for k in first)


def test_cli_trains_a_lens_the_tuned_lens_library_loads(setup, tmp_path, caplog):
    from transformers import AutoModelForCausalLM
    from tuned_lens.nn.lenses import TunedLens

    train = setup
    manifest, source = train.manifest, train.source
    result = run_cli("train-lens", manifest.path, "--model", "tiny", "--corpus", source.path,
                     "--tokens", "256", "--context", "32", "--tokens-per-step", "64",
                     "--held-out", "64")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "lenses" / "tiny"
    assert "layer   logit   tuned" in result.stderr
    config = json.loads((folder / "config.json").read_text())
    assert config["lens_type"] == "linear_tuned_lens" and config["num_hidden_layers"] == 3
    model = AutoModelForCausalLM.from_pretrained(manifest.models[0].reference)
    assert config["base_model_name_or_path"] == manifest.models[0].reference
    with caplog.at_level(logging.WARNING):
        lens = TunedLens.from_model_and_pretrained(model, str(folder))
    assert len(lens) == 3
    assert not [r for r in caplog.records if "hash" in r.getMessage()]  # the library's check
    # The same lens on another model of the same shape: the library's hash check fails.
    other = AutoModelForCausalLM.from_pretrained(
        tiny.save_tiny_model("llama", tmp_path / "other", tiny.sentencepiece_tokenizer(), seed=1))
    with caplog.at_level(logging.WARNING):
        TunedLens.from_model_and_pretrained(other, str(folder))
    assert [r for r in caplog.records if "hash does not match" in r.getMessage()]
    report = json.loads((folder / "training-report.json").read_text())
    assert len(report["held_out"]["tuned"]["cross_entropy"]) == 4
    # A wrong model name is one clear line.
    bad = run_cli("train-lens", manifest.path, "--model", "nope", "--corpus", source.path)
    assert bad.returncode == 1 and "--model 'nope': no such model" in bad.stderr


def test_another_seed_gives_another_lens(setup, tmp_path):
    """--seed shuffles the training windows (as the library does), so it changes the lens."""
    train = setup
    train(tmp_path / "a")
    first = _params(tmp_path / "a")
    other = training.train_lens(train.spec.request, train.resolved, train.source,
                                tmp_path / "b", replace(SETTINGS, seed=SETTINGS.seed + 1))
    assert other["tokens"] == 400
    second = _params(tmp_path / "b")
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_a_lens_using_the_tuned_lens_warns_when_the_model_is_another(setup, tmp_path,
                                                                    tiny_models, caplog):
    """lensreport's own check: a lens whose unembed_hash is another model's is a warning
    (lenses are reused across fine-tunes), naming both."""
    from lensreport.commands.build import run_build
    from lensreport.manifest import load_manifest

    train = setup
    train(tmp_path / "lens")
    other = tiny.save_tiny_model("llama", tmp_path / "other", tiny.sentencepiece_tokenizer(),
                                 seed=1)
    manifest = load_manifest(write_manifest(tmp_path / "site-src", f"""
        models:
          - name: other
            model: {other}
            lens: {{kinds: [logit, tuned], tuned: {tmp_path / "lens"}}}
        prompts:
          - {{name: fox, text: "The quick brown fox"}}
    """))
    with caplog.at_level(logging.WARNING, logger="lensreport"):
        summary = run_build(manifest, tmp_path / "site")
    assert any("trained for another unembedding than model 'other'" in message
               for message in summary.warnings), summary.warnings


@pytest.mark.parametrize("family", ["llama", "opt-project-out"])
def test_float16_gradients_match_float64(tmp_path, tiny_models, weights_cache, family):
    """One training step's gradient on a float16 model equals a float64 autograd reference
    (0.2 scaled by 1/N and multiplied back in float16: entries flushed to zero). OPT's
    project_out maps the residual stream (32) to another width (16): translators act on
    the residual stream."""
    from lensreport.lens.corpus import Window
    from lensreport.lens.engine import ModelSession
    from lensreport.models.loading import ModelRequest
    from lensreport.models.references import resolve

    folder = tiny_models(family, "sentencepiece" if family == "llama" else "byte_level")
    session = ModelSession.open(ModelRequest("m", str(folder), dtype="float16", device="cpu"),
                                resolve(str(folder)))
    assert session.head.weight.dtype == torch.float16
    width, layers = session.hidden_size, session.num_layers
    translators = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(layers))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for translator in translators:
            translator.weight.copy_(0.05 * torch.randn(width, width, generator=generator))
            translator.bias.copy_(0.05 * torch.randn(width, generator=generator))
    ids = session.loaded.tokenizer("The quick brown fox jumps over the lazy dog. " * 3)
    batch = [Window(0, ids["input_ids"], [1] * (len(ids["input_ids"]) - 1))]
    optimizer = torch.optim.SGD(translators.parameters(), lr=0.0)
    training._train_step(session, session.head.in_float32(), translators, batch, optimizer)
    ours = torch.cat([p.grad.reshape(-1) for p in translators.parameters()]).double()

    # Reference: the model's hidden states (float16 forward, as the lens sees them), then
    # everything after them in float64 autograd.
    reference = copy.deepcopy(translators).double()
    reference.zero_grad(set_to_none=True)
    head64 = [copy.deepcopy(n).double() for n in session.head.norms]
    weight64 = session.head.weight.double()
    [(_, hidden, last)] = session.hidden_states([batch[0].input_ids])
    p_final = torch.softmax(last.double() @ weight64.T, -1)
    loss = 0.0
    for layer, translator in enumerate(reference):
        h = hidden[layer].double()
        x = h + translator(h)
        for norm in head64:
            x = norm(x)
        logp = torch.log_softmax(x @ weight64.T, -1)
        loss = loss + (p_final * (torch.log(p_final) - logp)).sum() / len(batch[0].input_ids)
    loss.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    norm = float(expected.norm())
    if norm > training.MAX_GRAD_NORM:  # _train_step clips like the library
        expected = expected * (training.MAX_GRAD_NORM / norm)
    assert float((ours - expected).norm() / expected.norm()) < 1e-3
