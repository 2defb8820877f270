"""The walk over every causal-LM family transformers ships (tests/test_families.py,
scripts/family_table.py).

Each family's tiny random model (tests/tiny.py: shrunk to 3 blocks and small widths, norms
moved off identity, head scaled) is saved with save_pretrained and opened through the
user's path with no configuration, then sorted into one of three lists:

* works: the lens rows equal the independent reference — row i the logits of the same model
  cut after block i (its block list truncated: the model's own code applies its own final
  norm, unembedding and logit post-processing), the last row the model's own logits;
* stops: lensreport refuses it with one line (the line is the reason);
* cannot: no tiny model of it runs here (its own forward fails on every tiny config, it needs
  a package or remote code, or a part of it does not shrink).

A family that works also decomposes (direct logit attribution, lens/decompose.py) when its
components sum to the model's pre-softcap logits at every position, for the model's top
token there; else its ``decompose_note`` is the one line the document would carry.

Anything else — a traceback from inside the model, a row off its reference — is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import tiny
from lensreport.errors import LensReportError
from lensreport.lens.decompose import decompose
from lensreport.lens.kinds import LogitLens, RawLens
from lensreport.lens.tiled import lens_inputs
from lensreport.models.heads import _tolerance

TEXT = "The quick brown fox jumps over the lazy dog"


@dataclass
class Outcome:
    family: str
    status: str  # "works" | "stops" | "cannot"
    reason: str = ""
    decompose_note: str | None = None  # why a family that works has no decomposition


def causal_lm_families() -> list[str]:
    """transformers' own causal-LM auto mapping, in order."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _blocks(model: nn.Module, layers: int, input_ids: torch.Tensor
            ) -> tuple[nn.Module, str, nn.ModuleList]:
    """The largest list of ``layers`` modules that runs on text (not a vision tower's)."""
    ran: set[str] = set()
    candidates = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) == layers]
    handles = [module[0].register_forward_pre_hook(lambda *_, name=name: ran.add(name))
               for name, module in candidates]
    try:
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    path, block_list = max(((name, module) for name, module in candidates if name in ran),
                           key=lambda item: sum(p.numel() for p in item[1].parameters()))
    parent_path, _, attribute = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), attribute, block_list


def truncated_logits(model: nn.Module, input_ids: torch.Tensor, blocks: int) -> torch.Tensor:
    """The model's own logits with only its first ``blocks`` decoder blocks (the config's
    depth and per-layer lists cut to match, past its validators)."""
    text_config = model.config.get_text_config()
    layers = text_config.num_hidden_layers
    parent, attribute, block_list = _blocks(model, layers, input_ids)
    saved = {key: value for key, value in vars(text_config).items()
             if key in ("num_hidden_layers", "num_blocks") and value == layers
             or isinstance(value, list) and len(value) == layers}
    setattr(parent, attribute, nn.ModuleList(list(block_list)[:blocks]))
    for key, value in saved.items():
        text_config.__dict__[key] = value[:blocks] if isinstance(value, list) else blocks
    try:
        with torch.no_grad():
            return model(input_ids=input_ids, use_cache=False).logits[0].double()
    finally:
        setattr(parent, attribute, block_list)
        text_config.__dict__.update(saved)


def check_family(family: str, folder: Path, tokenizer) -> Outcome:
    """One family through the lens and its reference (see the module's docstring)."""
    from conftest import write_manifest
    from lensreport.manifest import load_manifest

    try:
        model_folder = tiny.save_any_family(family, folder / family, tokenizer)
    except ValueError as exc:
        return Outcome(family, "cannot", str(exc))
    manifest = load_manifest(write_manifest(folder, f"""
        models:
          - {{name: tiny, model: {model_folder}}}
        prompts:
          - {{name: p, text: "{TEXT}"}}
    """, name=f"{family}.yaml"))
    try:
        session = tiny.open_session(manifest, manifest.models[0])
    except LensReportError as exc:
        line = str(exc)
        assert line and "\n" not in line, f"{family}: not one line: {line!r}"
        return Outcome(family, "stops", line)
    encoded = tiny.encode(session, manifest.prompts[0])
    [(_, hidden, last)] = session.hidden_states([encoded.input_ids], parts=True)
    with torch.no_grad():
        lens = session.head.logits(lens_inputs(hidden, last, session.head, LogitLens())).double()
    model, ids = session.loaded.model, torch.tensor([encoded.input_ids])
    layers = model.config.get_text_config().num_hidden_layers
    assert lens.shape[0] == layers + 1, f"{family}: {lens.shape[0]} rows for {layers} blocks"
    scale = max(1.0, float(lens.abs().max()))
    with torch.no_grad():
        own = model(input_ids=ids, use_cache=False).logits[0].double()
    assert float((lens[-1] - own).abs().max()) < 1e-4 * scale, f"{family}: last row"
    for row in range(layers):
        reference = truncated_logits(model, ids, row)
        difference = float((lens[row] - reference).abs().max())
        assert difference < 1e-4 * scale, f"{family}: row {row} off by {difference:.3g}"
    # A no-op final norm would make the check blind: the perturbed norm must change logits.
    if session.head.norms and hidden[0].shape[-1] == session.head.weight.shape[1]:
        raw = session.head.logits(lens_inputs(hidden, last, session.head, RawLens())).double()
        assert float((raw[:-1] - lens[:-1]).abs().max()) > 1e-3, f"{family}: norm is a no-op"
    return Outcome(family, "works", decompose_note=_decomposition_note(session, hidden, last,
                                                                        own))


def _decomposition_note(session, hidden, last: torch.Tensor, own: torch.Tensor) -> str | None:
    """None where the family's components sum to its pre-softcap logits (the model's top
    token at every position), else the one line saying why not."""
    reading, head = session.reading, session.head
    if reading.blocks is None:
        note = reading.blocks_note
        assert note and "\n" not in note, note
        return note
    tokens = [[int(i)] for i in own.argmax(-1)]
    try:
        field = decompose(reading.blocks, head, hidden, last, hidden.parts, tokens,
                          _tolerance(session.loaded.model))
    except LensReportError as exc:
        assert "\n" not in str(exc), exc
        return str(exc)
    with torch.no_grad():
        logits = torch.nn.functional.linear(last.to(head.weight.device), head.weight,
                                            head.bias).double() * head.logit_scale
    pre = logits[torch.arange(len(tokens)), [t[0] for t in tokens]]
    total = torch.tensor([[row[0] for row in component] for component in field["attrs"]],
                         dtype=torch.float64).sum(0)
    assert torch.allclose(total, pre.cpu(), rtol=1e-4, atol=1e-3), (total, pre)
    return None


def walk(families: list[str], folder: Path, tokenizer
         ) -> tuple[list[Outcome], list[tuple[str, str]]]:
    """Every family's outcome, and the errors (family, what went wrong) found on the way."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    outcomes, errors = [], []
    for family in families:
        try:
            outcomes.append(check_family(family, folder, tokenizer))
        except Exception as exc:  # noqa: BLE001  (collected: one family hides no other)
            errors.append((family, f"{type(exc).__name__}: {str(exc)[:300]}"))
    return outcomes, errors


def summary(outcomes: list[Outcome]) -> str:
    works = [o.family for o in outcomes if o.status == "works"]
    stops = [o for o in outcomes if o.status == "stops"]
    cannot = [o for o in outcomes if o.status == "cannot"]
    undecomposed = [o for o in outcomes if o.status == "works" and o.decompose_note]
    lines = [f"works: {len(works)} of {len(works) + len(stops)} instantiable families "
             f"({len(cannot)} cannot be instantiated here)", "  " + ", ".join(works),
             f"decompose: {len(works) - len(undecomposed)} of {len(works)}; not:"]
    lines += [f"  {o.family}: {o.decompose_note}" for o in undecomposed]
    lines += ["stops with one line:"]
    lines += [f"  {o.family}: {o.reason}" for o in stops]
    lines += ["cannot be instantiated here:"] + [f"  {o.family}: {o.reason}" for o in cannot]
    return "\n".join(lines)
