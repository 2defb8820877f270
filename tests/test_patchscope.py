"""The patchscope lens against an independent float64 computation.

The reference is written here with forward hooks and no lensreport code: the model in
float64 runs the whole target prompt once per (row, position) cell, a pre-hook on block
l + 1 replacing the target position's state with the source's hidden_states[l] there, and
the model's own logits (softcap included) at the target position are the cell's.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import tiny
from conftest import SMOLLM2, run_cli, write_manifest
from lensreport.api import LensResult
from lensreport.lens.kinds import LogitLens, PatchscopeLens
from lensreport.lens.settings import TOKEN_IDENTITY_PROMPT, PatchscopeTarget
from lensreport.manifest import load_manifest

SOURCE = "The quick brown fox jumps over the lazy"
# Sequential RMSNorm, LayerNorm with biases and Conv1D, sandwich norms with a final softcap,
# parallel attention.
KINDS = [("llama", "sentencepiece"), ("gpt2", "byte_level"), ("gemma2", "byte_level"),
         ("gpt_neox", "byte_level")]
GAP = 1e-3  # top-1 is compared where the best two logits are further apart than this


def _blocks(model: nn.Module) -> nn.ModuleList:
    layers = model.config.get_text_config().num_hidden_layers
    return max((m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == layers),
               key=lambda m: sum(p.numel() for p in m.parameters()))


def reference_logits(model: nn.Module, source_ids: list[int], target_ids: list[int],
                     position: int) -> torch.Tensor:
    """(L, source positions, vocab) float64 logits of every patched cell, rows 0 … L-1."""
    model = copy.deepcopy(model).double()
    blocks = _blocks(model)
    count = len(source_ids)
    with torch.no_grad():
        states = model(input_ids=torch.tensor([source_ids]),
                       output_hidden_states=True).hidden_states
        rows = []
        for layer in range(len(blocks)):
            def replace(_module, args, kwargs, layer=layer):
                hidden = (args[0] if args else kwargs["hidden_states"]).clone()
                hidden[:, position] = states[layer][0]
                if args:
                    return (hidden, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": hidden}

            handle = blocks[layer].register_forward_pre_hook(replace, with_kwargs=True)
            try:  # the logits from the patched position on (the unembedding is most of it)
                logits = model(input_ids=torch.tensor([target_ids] * count),
                               logits_to_keep=len(target_ids) - position).logits
            finally:
                handle.remove()
            rows.append(logits[:, 0])
    return torch.stack(rows)


def _session(tmp_path, folder, lens: str = ""):
    manifest = load_manifest(write_manifest(tmp_path, f"""
        lens: {{kinds: [logit, patchscope], top_k: 3{lens}}}
        models:
          - name: tiny
            model: {folder}
        prompts:
          - name: p
            text: "{SOURCE}"
    """))
    return tiny.open_session(manifest), manifest


def _check_cells(result: LensResult, reference: torch.Tensor) -> None:
    """Entropy within 2e-3 and top-1 equal (where not near a tie) at every row < L."""
    log_probs = reference.log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    best = reference.topk(2, dim=-1)
    rows = reference.shape[0]
    assert result.rows[:rows] == list(range(rows))
    assert float(abs(result.entropy[:rows] - entropy.numpy()).max()) < 2e-3
    clear = (best.values[..., 0] - best.values[..., 1]) > GAP
    assert bool(clear.any())
    top1 = torch.from_numpy(result.topk_ids[:rows, :, 0])
    assert torch.equal(top1[clear], best.indices[..., 0][clear])


@pytest.mark.parametrize("name, tokenizer", KINDS)
def test_cells_equal_the_float64_patching_reference(name, tokenizer, tiny_models, tmp_path):
    session, manifest = _session(tmp_path, tiny_models(name, tokenizer))
    lens = PatchscopeLens.from_settings(manifest.models[0].lens, "", False)
    document, encoded = tiny.prompt_document(session, manifest.prompts[0], lens, 3)
    target = session.encode(TOKEN_IDENTITY_PROMPT)
    described = document["lens"]["patchscope"]
    assert described["target_ids"] == target and described["target_position"] == len(target) - 1
    assert described["prefix_cache"] is True
    reference = reference_logits(session.loaded.model, encoded.input_ids, target,
                                 len(target) - 1)
    result = LensResult(document)
    _check_cells(result, reference)
    # Row L is the model's own logits at each source position, as for every lens.
    logit, _ = tiny.prompt_document(session, manifest.prompts[0], LogitLens(), 3)
    assert document["entropy"][-1] == logit["entropy"][-1]


def test_a_target_position_inside_the_prompt_and_the_uncached_path(tiny_models, tmp_path):
    """A custom target, patched at a middle token: the cached path (one token per cell on
    the prefix's keys and values) equals running the whole prompt per cell, and both equal
    the reference."""
    session, manifest = _session(tmp_path, tiny_models("llama", "sentencepiece"),
                                 ', patchscope: {target: "a b c d e f", position: -3}')
    settings = manifest.models[0].lens.patchscope
    assert settings == PatchscopeTarget("a b c d e f", -3)
    cached = session.bind(PatchscopeLens(settings))
    uncached = session.bind(PatchscopeLens(settings, prefix_cache=False))
    assert cached.runner.prefix_cached and not uncached.runner.prefix_cached
    encoded = tiny.encode(session, manifest.prompts[0])
    [(_, hidden, _)] = session.hidden_states([encoded.input_ids])
    rows = list(range(len(hidden) - 1))
    fast = torch.stack(list(cached.translate_rows(rows, hidden)))
    slow = torch.stack(list(uncached.translate_rows(rows, hidden)))
    assert float((fast - slow).abs().max()) < 1e-5
    target = session.encode("a b c d e f")
    position = len(target) - 3
    document, _ = tiny.prompt_document(session, manifest.prompts[0], PatchscopeLens(settings), 3)
    assert document["lens"]["patchscope"]["target_position"] == position
    _check_cells(LensResult(document),
                 reference_logits(session.loaded.model, encoded.input_ids, target, position))


def test_patching_a_state_with_itself_gives_the_unpatched_output(tiny_models, tmp_path):
    """Source = target prompt: at the target position every row reads the model's own
    output there (the patch changes nothing)."""
    session, manifest = _session(tmp_path, tiny_models("gpt2", "byte_level"))
    lens = session.bind(PatchscopeLens(PatchscopeTarget(SOURCE)))
    ids = session.encode(SOURCE)
    [(_, hidden, last)] = session.hidden_states([ids])
    rows = list(range(len(hidden) - 1))
    read = torch.stack(list(lens.translate_rows(rows, hidden)))[:, -1]
    assert float((read - last[-1]).abs().max()) < 1e-5


def test_bad_target_positions_are_one_line(tiny_models, tmp_path):
    folder = tiny_models("llama", "sentencepiece")
    manifest = write_manifest(tmp_path, f"""
        lens: {{kinds: [patchscope], patchscope: {{target: "x y", position: 40}}}}
        models:
          - name: tiny
            model: {folder}
        prompts:
          - name: p
            text: "{SOURCE}"
    """)
    result = run_cli("build", manifest)
    assert result.returncode != 0
    assert "patchscope target position 40 is outside the target prompt's" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3
    manifest.write_text(manifest.read_text().replace("position: 40", "position: first"))
    result = run_cli("build", manifest)
    assert result.returncode != 0
    assert "prompts.yaml:1: lens.patchscope.position: expected a token index" in result.stderr


@pytest.mark.slow
def test_smollm2_cells_equal_the_reference(demo_models):
    """The real SmolLM2 (float32, 30 layers) against the float64 reference, every row."""
    from lensreport import run_lens

    model, tokenizer = demo_models("smollm2-135m")
    source = "The quick brown fox jumps"  # 5 positions × 30 rows of float64 patched runs
    result = run_lens(model, tokenizer, source, lens="patchscope", top_k=3)
    ids = tokenizer(source).input_ids
    target = tokenizer(TOKEN_IDENTITY_PROMPT).input_ids
    assert result.document["lens"]["patchscope"]["target_ids"] == target
    _check_cells(result, reference_logits(model, ids, target, len(target) - 1))
    assert not math.isnan(result.entropy[-1, -1])


@pytest.mark.browser
def test_the_lens_switch_shows_the_patchscope(demo_site, page):
    """The demo's SmolLM2 reads the fox prompt with the patchscope beside the logit lens."""
    from lensreport.results.documents import loads

    page.goto((demo_site / "prompts" / "fox" / "index.html").as_uri())
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
    figure = page.locator('.figure[data-model="smollm2-135m"]')
    options = figure.locator(".lens-select option").all_inner_texts()
    assert options == ["logit lens", "tuned lens", "patchscope"]
    selector = '.figure[data-model="smollm2-135m"] .heatmap'
    before = page.evaluate("s => document.querySelector(s).data[0].z", selector)
    figure.locator(".lens-select").select_option(label="patchscope")
    page.wait_for_function("([s, z]) => JSON.stringify(document.querySelector(s).data[0].z)"
                           " !== JSON.stringify(z)", arg=[selector, before], timeout=10_000)
    z = page.evaluate("s => document.querySelector(s).data[0].z", selector)
    document = loads((demo_site / "data" / "smollm2-135m" / "fox.patchscope.json").read_text())
    assert z[0][0] == pytest.approx(document["entropy"][0][0], abs=1e-3)
    assert z[0][0] != pytest.approx(before[0][0], abs=1e-3)
    assert page.errors == []
