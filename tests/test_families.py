"""Every decoder family transformers ships works with no configuration, checked against the
model itself.

The reference is independent of how lensreport finds the final norm: the logit lens at row i
must equal the logits of the *same model cut after block i* (its block list truncated), which
the model's own code computes with its own final norm, unembedding and logit
post-processing. Tiny random models of each family are saved with save_pretrained and loaded
through the user's path, with no manifest override.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tiny
from conftest import run_cli, write_manifest
from lensreport.lens.kinds import LogitLens, RawLens
from lensreport.lens.tiled import lens_inputs
from lensreport.manifest import load_manifest

# Decoder-only causal-LM families (transformers 5.x), dense, mixture-of-experts, hybrid;
# with each kind of logit post-processing (soft-capping: gemma2, gemma3_text, vaultgemma,
# nanochat, beam; logit scale: cohere*; logits scaling: granite*).
FAMILIES = [
    "afmoe", "apertus", "arcee", "beam", "biogpt", "bitnet", "bloom", "codegen", "cohere",
    "cohere2", "cohere2_moe", "ctrl", "cwm", "diffllama", "doge", "ernie4_5", "ernie4_5_moe",
    "exaone", "exaone4", "exaone_moe", "falcon", "falcon_h1", "flex_olmo", "gemma", "gemma2",
    "gemma3_text", "glm", "glm4", "glm4_moe", "gpt2", "gpt_bigcode", "gpt_neo", "gpt_neox",
    "gpt_neox_japanese", "gpt_oss", "gptj", "granite", "granitemoe", "granitemoeshared",
    "helium", "hyperclovax", "internlm3", "jamba", "jetmoe",
    "lfm2", "llama", "minimax", "ministral3", "mistral", "mixtral", "mpt", "nanochat",
    "nemotron_h", "olmo", "olmo2", "olmo3", "olmoe", "openai-gpt", "opt", "persimmon", "phi",
    "phi3", "phimoe", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next", "seed_oss",
    "smollm3", "stablelm", "starcoder2", "vaultgemma", "xglm",
]
# No direct logit attribution (one line each): hybrids whose blocks add more than an
# attention and an MLP, a post-LN block (openai-gpt) and OPT's MLP without a module of its own.
NOT_DECOMPOSED = ["beam", "falcon_h1", "minimax", "nemotron_h", "openai-gpt", "opt"]
# Their hidden states are not the residual stream the blocks read: one clear line instead.
UNSUPPORTED = ["mamba", "rwkv"]
TEXT = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.byte_level_tokenizer()


def _truncated_logits(model: nn.Module, input_ids: torch.Tensor, blocks: int) -> torch.Tensor:
    """The model's own logits with only its first ``blocks`` decoder blocks."""
    layers = model.config.get_text_config().num_hidden_layers
    path, block_list = max(
        ((name, module) for name, module in model.named_modules()
         if isinstance(module, nn.ModuleList) and len(module) == layers),
        key=lambda item: sum(p.numel() for p in item[1].parameters()))
    parent_path, _, attribute = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    text_config = model.config.get_text_config()
    setattr(parent, attribute, nn.ModuleList(list(block_list)[:blocks]))
    text_config.num_hidden_layers = blocks
    try:
        with torch.no_grad():
            return model(input_ids=input_ids, use_cache=False).logits[0].double()
    finally:
        setattr(parent, attribute, block_list)
        text_config.num_hidden_layers = layers


def test_the_families_are_distinct_decoder_only_causal_lms_transformers_ships():
    """What the matrix below runs: at least 70 model types of this transformers' causal-LM
    mapping, with as many distinct model classes (no alias counted twice), none an
    encoder-decoder; and every kind of logit post-processing set off its default by
    tiny.tiny_config in some family (so the lens is checked against each)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    families = FAMILIES + UNSUPPORTED
    assert len(set(families)) == len(families), "a family is listed twice"
    unknown = [f for f in families if f not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES]
    assert unknown == [], f"not causal-LM model types of this transformers: {unknown}"
    classes = {MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[f] for f in FAMILIES}
    assert len(classes) >= 70, sorted(classes)
    post_processed: dict[str, list[str]] = {key: [] for key in tiny.POSTPROCESSING}
    for family in FAMILIES:
        config = tiny.tiny_config(family, 512)
        assert not config.is_encoder_decoder, family
        text = config.get_text_config()
        for key, value in tiny.POSTPROCESSING.items():
            if getattr(text, key, None) == value:
                post_processed[key].append(family)
    assert all(post_processed.values()), post_processed
    assert set(NOT_DECOMPOSED) <= set(FAMILIES) and len(NOT_DECOMPOSED) <= 0.1 * len(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_the_truncated_model(family, tokenizer, tmp_path):
    folder = tiny.save_any_family(family, tmp_path / family, tokenizer)
    manifest = load_manifest(write_manifest(tmp_path, f"""
        models:
          - {{name: tiny, model: {folder}}}
        prompts:
          - {{name: p, text: "{TEXT}"}}
    """))
    spec = manifest.models[0]
    session = tiny.open_session(manifest, spec)
    encoded = tiny.encode(session, manifest.prompts[0])
    [(_, hidden, last)] = session.hidden_states([encoded.input_ids])
    with torch.no_grad():
        lens = session.head.logits(lens_inputs(hidden, last, session.head, LogitLens())).double()
    model, ids = session.loaded.model, torch.tensor([encoded.input_ids])
    layers = model.config.get_text_config().num_hidden_layers
    assert lens.shape[0] == layers + 1
    # Direct logit attribution: every family's blocks decompose but the listed ones', which
    # say why in one line (the numbers: test_decomposition.py).
    reading = session.reading
    assert (reading.blocks is None) == (family in NOT_DECOMPOSED), reading.blocks_note
    assert reading.blocks is not None or "\n" not in reading.blocks_note
    scale = max(1.0, float(lens.abs().max()))
    for row in range(layers + 1):
        reference = _truncated_logits(model, ids, row)
        assert float((lens[row] - reference).abs().max()) < 1e-4 * scale, f"row {row}"
    # A no-op final norm would make the test blind: the perturbed norm must change logits.
    if session.head.norms and hidden[0].shape[-1] == session.head.weight.shape[1]:
        raw = session.head.logits(lens_inputs(hidden, last, session.head, RawLens())).double()
        assert float((raw[:-1] - lens[:-1]).abs().max()) > 1e-3


@pytest.mark.parametrize("family", UNSUPPORTED)
def test_state_space_models_get_one_clear_line(family, tokenizer, tmp_path):
    folder = tiny.save_any_family(family, tmp_path / family, tokenizer)
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: ssm, model: {folder}}}
        prompts:
          - {{name: p, text: "{TEXT}"}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "not supported" in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "site").exists()
