"""Per-architecture lens correctness on tiny random models loaded through the user's path.

The reference is written independently of lensreport: the expected final-norm module per
family, applied by hand, statistics in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

import tiny
from conftest import write_manifest
from lensreport.lens.kinds import LogitLens, lens_class
from lensreport.lens.tiled import lens_inputs, lens_statistics
from lensreport.manifest import load_manifest

EXPECTED_NORM = {
    "gpt2": "transformer.ln_f", "gptj": "transformer.ln_f", "bloom": "transformer.ln_f",
    "falcon": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm",
    "opt": "model.decoder.final_layer_norm", "opt-project-out": "model.decoder.project_out",
    "phi": "model.final_layernorm",
}
ARCHITECTURES = ["gpt2", "gptj", "gpt_neox", "opt", "opt-project-out", "bloom", "falcon",
                 "llama", "mistral", "qwen2", "qwen3", "phi", "phi3", "gemma", "gemma2",
                 "gemma3_text", "stablelm", "starcoder2"]
TEXT = "The quick brown fox jumps over the lazy dog"


def _module(model, path):
    for part in path.split("."):
        model = getattr(model, part)
    return model


def open_session(tmp_path, folder, kind="logit", dtype="auto"):
    manifest = load_manifest(write_manifest(tmp_path, f"""
        lens: {{kind: {kind}, top_k: 4}}
        models:
          - name: tiny
            model: {folder}
            dtype: {dtype}
        prompts:
          - name: p
            text: "{TEXT}"
            target: " fox"
    """))
    spec = manifest.models[0]
    session = tiny.open_session(manifest, spec)
    document, encoded = tiny.prompt_document(session, manifest.prompts[0],
                                             lens_class(spec.lens.kind)(), spec.lens.top_k)
    return session, document, encoded


def reference_logits(model, name, input_ids, kind="logit"):
    """Layer-by-layer logits, by hand: norm module from the table above, softcap from config."""
    with torch.no_grad():
        output = model(input_ids=input_ids, output_hidden_states=True)
        norm = _module(model, EXPECTED_NORM.get(name, "model.norm"))
        head = model.get_output_embeddings()
        cap = getattr(model.config, "final_logit_softcapping", None)
        rows = []
        for hidden in output.hidden_states[:-1]:
            logits = head(norm(hidden) if kind == "logit" else hidden)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            rows.append(logits[0].double())
        rows.append(output.logits[0].double())
    return rows, output


TIE = 1e-4  # logits this close are tied within float32 noise (the lens's own margin is smaller)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_lens_matches_reference(name, tiny_models, tmp_path):
    tokenizer = "sentencepiece" if name in ("llama", "gemma", "gemma3_text") else "byte_level"
    folder = tiny_models(name, tokenizer)
    session, document, encoded = open_session(tmp_path, folder)
    model = session.loaded.model
    ids = torch.tensor([encoded.input_ids])
    rows, output = reference_logits(model, name, ids)
    layers = len(rows)
    assert document["layers"] == list(range(layers))
    assert layers == model.config.num_hidden_layers + 1
    final_logp = torch.log_softmax(rows[-1], -1)
    for layer, logits in enumerate(rows):
        logp = torch.log_softmax(logits, -1)
        p = logp.exp()
        entropy = -(p * logp).sum(-1)
        kl = (final_logp.exp() * (final_logp - logp)).sum(-1)
        for t in range(ids.shape[1]):
            assert document["entropy"][layer][t] == pytest.approx(float(entropy[t]), abs=2e-4)
            assert document["kl_to_final"][layer][t] == pytest.approx(float(kl[t]), abs=2e-3)
            top = torch.topk(p[t], 4)
            assert document["topk_probs"][layer][t] == pytest.approx(top.values.tolist(),
                                                                     rel=1e-3, abs=1e-6)
            # Near-ties break differently on other CPUs: any token within the reference's
            # tolerance of the best one is a right top-1, and a rank may fall anywhere in
            # the band of tokens tied with the next token within that tolerance.
            best = int(document["topk_ids"][layer][t][0])
            assert float(logits[t, best]) >= float(logits[t].max()) - TIE
            if t + 1 < ids.shape[1]:
                next_id = int(ids[0, t + 1])
                z = logits[t, next_id]
                lowest = int((logits[t] > z + TIE).sum()) + 1
                highest = int((logits[t] >= z - TIE).sum())
                assert lowest <= document["next_token_rank"][layer][t] <= highest
                assert document["next_token_prob"][layer][t] == pytest.approx(
                    float(p[t, next_id]), rel=1e-3, abs=1e-7)
            else:
                assert document["next_token_prob"][layer][t] is None
            target_p = float(p[t, encoded.target_id])
            assert document["target_prob"][layer][t] == pytest.approx(target_p, rel=1e-3,
                                                                      abs=1e-7)


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma2"])
def test_final_norm_applied_once(name, tiny_models, tmp_path):
    """Last row == the model's logits; normalising the last hidden state again would differ."""
    session, document, encoded = open_session(tmp_path, tiny_models(name))
    model = session.loaded.model
    ids = torch.tensor([encoded.input_ids])
    rows, output = reference_logits(model, name, ids)
    own = torch.softmax(output.logits[0].double(), -1)
    norm = _module(model, EXPECTED_NORM.get(name, "model.norm"))
    with torch.no_grad():
        twice = torch.softmax(model.get_output_embeddings()(norm(output.hidden_states[-1]))[0]
                              .double(), -1)
    last = document["layers"][-1]
    for t in range(ids.shape[1]):
        top = torch.topk(own[t], 4)
        # Each listed token's own probability, whatever order near-ties take.
        assert [float(own[t, i]) for i in document["topk_ids"][last][t]] == pytest.approx(
            top.values.tolist(), rel=1e-3)
        assert document["topk_probs"][last][t] == pytest.approx(top.values.tolist(), rel=1e-3)
    # The perturbed norm makes a second normalisation visible: guard against a no-op test.
    assert float((twice - own).abs().max()) > 1e-2


def test_raw_lens_skips_the_norm(tiny_models, tmp_path):
    session, document, encoded = open_session(tmp_path, tiny_models("llama"), kind="raw")
    rows, _ = reference_logits(session.loaded.model, "llama", torch.tensor([encoded.input_ids]),
                               kind="raw")
    for layer, logits in enumerate(rows):
        p = torch.softmax(logits, -1)
        assert float(logits[-1, document["topk_ids"][layer][-1][0]]) >= \
            float(logits[-1].max()) - TIE
        assert document["topk_probs"][layer][-1][0] == pytest.approx(float(p[-1].max()),
                                                                     rel=1e-3)
    assert document["lens"]["kind"] == "raw"


def test_tracked_tokens_cover_every_topk_token(tiny_models, tmp_path):
    _, document, _ = open_session(tmp_path, tiny_models("qwen2"))
    layers = len(document["layers"])
    for t, ids in enumerate(document["tracked_ids"]):
        shown = {i for layer in range(layers) for i in document["topk_ids"][layer][t]}
        assert shown == set(ids)
        for layer in range(layers):
            for j, token in enumerate(document["topk_ids"][layer][t]):
                column = ids.index(token)
                # Tracked probabilities at 4 decimals (README), top-k at 4 significant digits.
                tracked = document["tracked_probs"][t][layer][column]
                assert tracked == pytest.approx(document["topk_probs"][layer][t][j], rel=2e-3,
                                                abs=5e-5 + 1e-9)


def test_results_schema_fields(tiny_models, tmp_path):
    _, document, _ = open_session(tmp_path, tiny_models("gpt2"))
    for field in ("schema_version", "model", "prompt", "input_ids", "input_tokens", "layers",
                  "topk_ids", "topk_probs", "entropy", "kl_to_final", "next_token_prob",
                  "next_token_rank", "vocab", "tracked_ids", "tracked_probs", "lens",
                  "tokenizer", "generator"):
        assert field in document, field
    assert document["model"]["architecture"] == "GPT2LMHeadModel"
    assert document["generator"]["torch"] == torch.__version__
    used = {i for row in document["topk_ids"] for pos in row for i in pos}
    assert used | set(document["input_ids"]) <= {int(k) for k in document["vocab"]}
    assert all(math.isfinite(v) for row in document["entropy"] for v in row)


def test_bfloat16_model_gets_float32_statistics(tiny_models, tmp_path):
    """bf16 weights: logits as the model computes them, statistics upcast before softmax."""
    session, document, encoded = open_session(tmp_path, tiny_models("llama", "sentencepiece"),
                                              dtype="bfloat16")
    model = session.loaded.model
    assert next(model.parameters()).dtype == torch.bfloat16
    rows, _ = reference_logits(model, "llama", torch.tensor([encoded.input_ids]))
    for layer, logits in enumerate(rows):
        logp = torch.log_softmax(logits.float().double(), -1)
        entropy = -(logp.exp() * logp).sum(-1)
        for t in range(len(encoded.input_ids)):
            assert document["entropy"][layer][t] == pytest.approx(float(entropy[t]), abs=1e-3)
            top = torch.topk(logp[t].exp(), 1)
            assert document["topk_probs"][layer][t][0] == pytest.approx(float(top.values[0]),
                                                                        rel=1e-3)


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma3_text"])
def test_batched_prompts_match_unbatched(name, tiny_models, tmp_path):
    """Prompts of different lengths in one padded batch give the numbers they get alone."""
    tokenizer = "sentencepiece" if name != "gpt2" else "byte_level"
    manifest = load_manifest(write_manifest(tmp_path, f"""
        models:
          - name: tiny
            model: {tiny_models(name, tokenizer)}
        prompts:
          - {{name: short, text: "Hello"}}
          - {{name: long, text: "The quick brown fox jumps over the lazy dog. one two three"}}
          - {{name: mid, text: "The capital of France is", target: " Paris"}}
    """))
    spec = manifest.models[0]
    session = tiny.open_session(manifest, spec)
    encoded = [tiny.encode(session, p) for p in manifest.prompts]
    assert len({len(e.input_ids) for e in encoded}) == 3
    def stats(encoded_prompt, hidden, last):
        inputs = lens_inputs(hidden, last, session.head, LogitLens())
        return lens_statistics(inputs, session.head, torch.tensor(encoded_prompt.input_ids), 5,
                        encoded_prompt.target_id)

    batched = {i: stats(encoded[i], h, last) for i, h, last in session.hidden_states([e.input_ids for e in encoded])}
    assert sorted(batched) == [0, 1, 2]
    for i in range(3):
        [(_, hidden, last)] = session.hidden_states([encoded[i].input_ids])
        alone = stats(encoded[i], hidden, last)
        assert (batched[i].topk_ids == alone.topk_ids).all()
        for field in ("entropy", "kl_to_final", "topk_probs", "next_token_prob"):
            assert getattr(batched[i], field) == pytest.approx(getattr(alone, field), abs=1e-5,
                                                               nan_ok=True), field
