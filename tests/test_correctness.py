"""Instrument correctness (issue 17): each test here failed on 0.2 (0f3117c), on inputs built
to break the defect it guards against."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from conftest import write_manifest
from lensreport.lens.curves import BOOTSTRAP_SAMPLES, CorpusSums
from lensreport.lens.tiled import TIE_MARGIN, lens_statistics
from lensreport.models.heads import LensHead
from lensreport.results.metrics import MIN_INTERVAL_DOCUMENTS, SUMMED_METRICS
from lensreport.results.documents import loads


def _head(weight: torch.Tensor) -> LensHead:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    return LensHead(norm_paths=(), norms=[], unembedding_path="w", unembedding=linear)


@pytest.mark.parametrize("block", [None, 7, 32])
def test_tied_tokens_share_the_better_rank(block):
    """Ten identical unembedding rows (as untrained or reserved tokens often are), the target
    among them: every tied token has the same logit, so the target's rank is 1 + the number
    of tokens strictly above the tie — computed here in float64, where the ties are exact.
    (0.2 compared tiles with a separate dot product: 15 of 35 cells ranked 10 too high.)"""
    generator = torch.Generator().manual_seed(0)
    vocab, width, tied = 60, 96, list(range(20, 30))
    weight = torch.randn(vocab, width, generator=generator)
    weight[tied] = weight[tied[0]].clone()
    inputs = torch.randn(5, 7, width, generator=generator)  # (rows, T, d)
    target = tied[3]
    stats = lens_statistics(inputs, _head(weight), torch.arange(7), top_k=3, target_id=target,
                            block=block)
    exact = inputs.double() @ weight.double().T  # (rows, T, vocab)
    expected = 1 + (exact > exact[..., target:target + 1]).sum(-1)
    # Ties are exact; every other gap is far wider than the tie margin (TIE_MARGIN × |z|).
    gaps = (exact - exact[..., target:target + 1]).abs()
    gaps[..., tied] = float("inf")
    assert float(gaps.min()) > 10 * TIE_MARGIN * float(exact.abs().max())
    assert stats.target_rank.tolist() == expected.tolist()


def _sums(documents: list[int], windows: list[np.ndarray], tokens: list[int]) -> CorpusSums:
    sums = CorpusSums(rows=windows[0].shape[0])
    for document, values, count in zip(documents, windows, tokens):
        sums.add(document, {metric: values for metric in SUMMED_METRICS}, count, 2 * count)
    return sums


def test_a_document_is_one_bootstrap_unit_whatever_the_window_order():
    """Windows arrive sorted by length, so a long document's short last window comes before
    its full windows: [doc 0 short, docs 1-5, doc 0 full, doc 0 full] is six units, and the
    interval is an independent document-level bootstrap's (0.2 made it eight)."""
    rng = np.random.default_rng(1)
    documents = [0, 1, 2, 3, 4, 5, 0, 0]
    tokens = [50, 300, 120, 90, 200, 60, 511, 511]
    windows = [rng.random(3) * n for n in tokens]
    sums = _sums(documents, windows, tokens)
    assert sums.documents == [0, 1, 2, 3, 4, 5]
    curves = sums.curves(seed=0)
    values = np.stack([sum(w for d, w in zip(documents, windows) if d == k) for k in range(6)])
    denominators = np.array([sum(n for d, n in zip(documents, tokens) if d == k)
                             for k in range(6)], dtype=np.float64)
    weights = np.random.default_rng(0).multinomial(6, [1 / 6] * 6, size=BOOTSTRAP_SAMPLES)
    resampled = (weights @ values) / (weights @ denominators)[:, None]
    low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
    assert curves["entropy"] == pytest.approx(list(values.sum(0) / denominators.sum()),
                                              abs=1e-6)
    assert [c[0] for c in curves["entropy_ci"]] == pytest.approx(list(low), abs=1e-6)
    assert [c[1] for c in curves["entropy_ci"]] == pytest.approx(list(high), abs=1e-6)


def test_too_few_documents_give_no_interval_rather_than_a_false_one():
    one = _sums([0, 0], [np.ones(3), np.ones(3)], [10, 10]).curves()
    assert one["entropy_ci"] is None and one["entropy"] == pytest.approx([0.1] * 3)
    assert _sums(list(range(MIN_INTERVAL_DOCUMENTS)), [np.ones(3)] * MIN_INTERVAL_DOCUMENTS,
                 [10] * MIN_INTERVAL_DOCUMENTS).curves()["entropy_ci"] is not None


def test_a_legacy_sentencepiece_target_takes_its_single_token_form():
    """Llama-2-style tokenizers spell " dog" as ['▁', '▁dog']; the target is '▁dog', not '▁'."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    from lensreport.models.prompts import target_token_ids

    pieces = [("<unk>", 0.0), ("▁", -2.0), ("▁dog", -2.0), ("d", -5.0), ("o", -5.0),
              ("g", -5.0)]
    raw = Tokenizer(models.Unigram(pieces, unk_id=0))
    # As Llama-2's tokenizer.json does it: prepend "▁", then every space becomes "▁".
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode(" dog", add_special_tokens=False)) \
        == ["▁", "▁dog"]  # the trap
    assert tokenizer.convert_ids_to_tokens(target_token_ids(tokenizer, " dog")) == ["▁dog"]


def test_multimodal_configs_give_the_text_models_facts():
    """Gemma3ForConditionalGeneration keeps layers, width and context in its text config."""
    from transformers import Gemma3Config

    from lensreport.models.loading import ModelRequest, model_facts
    from lensreport.models.references import ResolvedModel

    config = Gemma3Config()
    assert getattr(config, "num_hidden_layers", None) is None  # the trap
    text = config.get_text_config()
    weight = nn.Parameter(torch.zeros(4, 2))
    model = SimpleNamespace(config=config, get_output_embeddings=lambda: SimpleNamespace(
        weight=torch.zeros(text.vocab_size, 1)), num_parameters=lambda: 1,
        parameters=lambda: iter([weight]), hf_device_map=None)
    facts = model_facts(ModelRequest("m", "m"), ResolvedModel("folder", ".", None, "x"),
                        model, "cpu")
    assert facts["num_layers"] == text.num_hidden_layers > 0
    assert facts["hidden_size"] == text.hidden_size
    assert facts["max_context"] == text.max_position_embeddings


def test_published_tuned_lens_source_is_relative_to_the_manifest(tmp_path, tiny_models,
                                                                weights_cache):
    """A site built from two folders carries no absolute path of the build machine."""
    from lensreport.lens.fit.settings import TrainSettings
    from lensreport.lens.fit.tuned import train_lens
    from lensreport.lens.corpus import CorpusSource
    from lensreport.commands.build import run_build
    from lensreport.manifest import load_manifest
    from lensreport.manifest.checks import resolve_model

    sites = []
    for name in ("first", "second"):
        folder = tmp_path / name
        corpus = folder / "corpus.txt"
        folder.mkdir()
        corpus.write_text("\n\n".join(f"The quick brown fox jumps {i}." for i in range(30)))
        manifest = load_manifest(write_manifest(folder, f"""
            models:
              - name: tiny
                model: {tiny_models("llama", "sentencepiece")}
                lens: {{kinds: [logit, tuned], tuned: lenses/tiny}}
            prompts:
              - {{name: fox, text: "The quick brown fox"}}
        """))
        spec = manifest.models[0]
        train_lens(spec.request, resolve_model(manifest, spec), CorpusSource(path=corpus),
                   folder / "lenses" / "tiny",
                   TrainSettings(tokens=64, context=16, tokens_per_step=32, held_out_tokens=0))
        run_build(manifest, folder / "site")
        sites.append(folder / "site")
    document = loads((sites[0] / "data" / "tiny" / "fox.tuned.json").read_text())
    assert document["lens"]["tuned"]["source"] == "lenses/tiny"
    for site in sites:
        for path in site.rglob("*"):
            if path.is_file() and path.suffix in (".html", ".json"):
                assert str(tmp_path) not in path.read_text(encoding="utf-8"), path
    first = {p.relative_to(sites[0]): p.read_bytes() for p in sites[0].rglob("*") if p.is_file()}
    second = {p.relative_to(sites[1]): p.read_bytes() for p in sites[1].rglob("*")
              if p.is_file()}
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_an_unknown_hub_commit_is_never_cached(tmp_path, monkeypatch):
    """Offline with no local ref, a branch name cannot say which weights it meant: the run is
    not keyed by the name (0.2 reused a cache made at another commit)."""
    from lensreport.models import references

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    references.hub_reachable.cache_clear()
    resolved = references.resolve("someone/some-model", "main", tmp_path)
    assert resolved.kind == "hub" and not resolved.cacheable
    pinned = references.resolve("someone/some-model", "a" * 40, tmp_path)
    assert pinned.cacheable and pinned.identity.endswith("@" + "a" * 40)


def test_a_closed_network_is_found_with_one_short_probe(tmp_path, monkeypatch):
    """No network and no HF_HUB_OFFLINE: one connection attempt, then the Hub client is never
    asked (0.2 waited 50 s in its retries before the same clear error)."""
    import socket

    import huggingface_hub

    from lensreport.models import references

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    references.hub_reachable.cache_clear()
    attempts, asked = [], []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda *args, **kwargs: asked.append(args) or None)
    for name in ("a/b", "c/d", "e/f"):
        assert not references.resolve(name, None, tmp_path).cacheable
    assert len(attempts) == 1 and asked == []
    references.hub_reachable.cache_clear()


def test_intervals_do_not_depend_on_the_window_order():
    rng = np.random.default_rng(2)
    documents, tokens = [0, 1, 2, 3, 4, 5, 0], [30, 40, 50, 60, 70, 80, 90]
    windows = [rng.random(3) * n for n in tokens]
    forward = _sums(documents, windows, tokens).curves()
    backward = _sums(documents[::-1], windows[::-1], tokens[::-1]).curves()
    assert forward["entropy_ci"] == backward["entropy_ci"]
