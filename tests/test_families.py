"""Every causal-LM family transformers ships, checked against the model itself with no
configuration (tests/family_walk.py says how).

By default a representative subset runs: the state-space and recurrent decoders, hybrids,
and each kind of head (logit soft-capping, logit scales, a projection after the norm, a
prediction head that transforms the stream before its decoder). The whole walk over
transformers' causal-LM mapping is behind the ``families_all`` marker:

    pytest -m families_all tests/test_families.py -s
"""

from __future__ import annotations

import pytest

import family_walk
import tiny
from conftest import run_cli, write_manifest

# State-space and recurrent (mamba … recurrent_gemma), hybrids (jamba: attention and Mamba
# layers; falcon_h1: both in every block; qwen3_next: linear and full attention), and heads:
# soft-capping (gemma2), logit scale (cohere), logits scaling (granite), a projection after
# the norm (opt), a transform with an activation inside the head's container (roberta),
# multi-head latent attention (deepseek_v3), a constant after the final norm (inkling_text),
# a pooler off the stream's path (big_bird), plain (gpt2, llama).
DEFAULT = ["mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm", "recurrent_gemma", "jamba",
           "falcon_h1", "qwen3_next", "gemma2", "cohere", "granite", "opt", "roberta",
           "deepseek_v3", "inkling_text", "big_bird", "gpt2", "llama", "gpt_neox", "mixtral"]
# Direct logit attribution: these decompose (with llama, gpt2, gemma2, gpt_neox, mixtral:
# sequential RMSNorm, LayerNorm with Conv1D, sandwich norms, parallel attention, MoE; opt: an
# MLP over the flattened (B·T, d) stream; mamba, mamba2, falcon_mamba: one part per block;
# falcon_h1: three; rwkv: block 1 norms its input before adding to it; inkling_text: a
# constant after the final norm); roberta and big_bird say why not in one line (post-LN,
# and a non-linear prediction head): 19 of the 21 (90 %).
DECOMPOSED = ["llama", "gpt2", "gemma2", "gpt_neox", "mixtral", "cohere", "granite",
              "deepseek_v3", "qwen3_next", "jamba", "xlstm", "recurrent_gemma", "opt",
              "mamba", "mamba2", "falcon_mamba", "falcon_h1", "rwkv", "inkling_text"]
# Of the families that work, the share whose blocks must decompose: 135 of 164 (82 %) with
# transformers 5.25; 20 of the rest are post-LN (BERT-style and BART-style decoders: a norm
# after the residual add, so a block's output is no sum of parts), 4 have a non-linear
# prediction head, which no direct logit attribution can split, and 5 scale, gate or mix the
# stream inside their blocks.
DECOMPOSED_SHARE = 0.82
# The share of the families instantiable here that must give the reference numbers.
REQUIRED_SHARE = 0.95


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.byte_level_tokenizer()


def test_the_default_families_are_causal_lms_of_this_transformers():
    families = family_walk.causal_lm_families()
    assert len(families) >= 150, len(families)
    assert [f for f in DEFAULT if f not in families] == []


@pytest.mark.parametrize("family", DEFAULT)
def test_family_matches_its_own_model(family, tokenizer, tmp_path):
    outcome = family_walk.check_family(family, tmp_path, tokenizer)
    assert outcome.status == "works", outcome
    if family in DECOMPOSED:
        assert outcome.decompose_note is None, outcome


@pytest.mark.families_all
def test_every_causal_lm_family(tokenizer, tmp_path):
    """The three lists, printed (run with -s); no traceback from any family, and at least
    REQUIRED_SHARE of the instantiable families work."""
    outcomes, errors = family_walk.walk(family_walk.causal_lm_families(), tmp_path, tokenizer)
    print("\n" + family_walk.summary(outcomes))
    assert errors == []
    works = [o.family for o in outcomes if o.status == "works"]
    instantiable = [o for o in outcomes if o.status != "cannot"]
    assert len(works) >= REQUIRED_SHARE * len(instantiable), family_walk.summary(outcomes)
    assert set(DEFAULT) <= set(works)
    decomposed = [o.family for o in outcomes if o.status == "works" and not o.decompose_note]
    assert len(decomposed) >= DECOMPOSED_SHARE * len(works), family_walk.summary(outcomes)


def test_a_family_the_lens_cannot_read_gets_one_clear_line(tokenizer, tmp_path):
    """Dory runs its blocks twice per forward pass: no state after each block to read."""
    folder = tiny.save_any_family("dory", tmp_path / "dory", tokenizer)
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: looped, model: {folder}}}
        prompts:
          - {{name: p, text: "{family_walk.TEXT}"}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "dory" in lines[-1].lower(), result.stderr
    assert "not supported" in lines[-1] or "does not reproduce" in lines[-1], lines[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "site").exists()
