"""train-lens on a tiny model: deterministic for a seed, resumes from its checkpoint to the
very same lens, writes the tuned-lens format, and the CLI prints the held-out table."""

from __future__ import annotations

import json

import pytest
import torch

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
    return train


SETTINGS = training.TrainSettings(tokens=400, context=32, tokens_per_step=64,
                                  held_out_tokens=64, checkpoint_every=2, seed=3)


def _params(folder):
    return torch.load(folder / "params.pt", weights_only=True)


def test_same_seed_same_lens_and_resume_gives_the_same_lens(setup, tmp_path, monkeypatch):
    train = setup
    manifest, source = train.manifest, train.source
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


def test_cli_trains_a_lens_the_tuned_lens_library_loads(setup, tmp_path):
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
    lens = TunedLens.from_model_and_pretrained(model, str(folder))
    assert len(lens) == 3
    report = json.loads((folder / "training-report.json").read_text())
    assert len(report["held_out"]["tuned"]["cross_entropy"]) == 4
    # A wrong model name is one clear line.
    bad = run_cli("train-lens", manifest.path, "--model", "nope", "--corpus", source.path)
    assert bad.returncode == 1 and "--model 'nope': no such model" in bad.stderr
