"""How to read a hidden state as logits, per architecture family.

The logit lens at layer i < L is ``postprocess(unembed(final_norm(h_i)))``; at i = L it is the
model's own logits (Hugging Face's last hidden state has already passed the final norm, so
it is never normalised twice). ``postprocess`` is whatever the model's forward does after the
unembedding: Gemma-2/3 soft-capping, Cohere's logit scale, Granite's logits scaling.

Every head is checked against the model's own forward on a short input when the model loads
(:func:`verify_head`), so a wrong module path can never give a silently wrong figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import LensReportError

_LN_F = ("transformer.ln_f",)

# model_type -> final-norm module paths, applied in order. The unembedding is whatever
# model.get_output_embeddings() returns (lm_head, or embed_out in older GPT-NeoX).
FAMILIES: dict[str, tuple[str, ...]] = {
    "gpt2": _LN_F, "gpt_bigcode": _LN_F, "gptj": _LN_F, "bloom": _LN_F, "falcon": _LN_F,
    "gpt_neox": ("gpt_neox.final_layer_norm",),
    # OPT: final_layer_norm (absent in opt-350m) then project_out (present in opt-350m).
    "opt": ("model.decoder.final_layer_norm", "model.decoder.project_out"),
    "phi": ("model.final_layernorm",),
    "gemma3": ("model.language_model.norm",),
    **{family: ("model.norm",) for family in (
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3",
        "gemma", "gemma2", "gemma3_text", "stablelm", "starcoder2", "olmo", "olmo2", "cohere",
        "granite", "smollm3", "glm", "helium", "exaone4")},
}

OVERRIDE_HINT = ("set `final_norm:` and `unembedding:` for this model in the manifest "
                 "(module paths as in model.named_modules(), e.g. final_norm: model.norm, "
                 "unembedding: lm_head)")


def _module(model: nn.Module, path: str) -> nn.Module | None:
    """The module at a dotted path; None where the path exists but holds None (OPT)."""
    obj: Any = model
    for part in path.split("."):
        if not hasattr(obj, part):
            raise AttributeError(path)
        obj = getattr(obj, part)
    if obj is not None and not isinstance(obj, nn.Module):
        raise AttributeError(path)
    return obj


def _config_value(config: Any, key: str) -> Any:
    value = getattr(config, key, None)
    if value is None and hasattr(config, "get_text_config"):
        value = getattr(config.get_text_config(), key, None)
    return value


@dataclass
class LensHead:
    """The parts of a model that turn a hidden state into next-token logits."""

    norm_paths: tuple[str, ...]
    norms: list[nn.Module]
    unembedding_path: str
    unembedding: nn.Module
    softcap: float | None = None
    logit_scale: float = 1.0
    description: dict[str, Any] = field(default_factory=dict)

    def normalize(self, hidden: torch.Tensor) -> torch.Tensor:
        for norm in self.norms:
            hidden = norm(hidden)
        return hidden

    @property
    def weight(self) -> torch.Tensor:
        return self.unembedding.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.unembedding, "bias", None)

    def postprocess(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model's forward does after the unembedding, in the model's dtype."""
        if self.logit_scale != 1.0:
            logits = logits * self.logit_scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def logits(self, normalized: torch.Tensor) -> torch.Tensor:
        """float32 logits for already-normalised hidden states (upcast before any softmax)."""
        return self.postprocess(nn.functional.linear(normalized, self.weight, self.bias)).float()


def _output_embeddings_path(model: nn.Module) -> str:
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is output and output is not None:
            return name
    raise LensReportError(f"{type(model).__name__} has no output embeddings (unembedding); "
                          f"{OVERRIDE_HINT}")


def find_head(model: nn.Module, final_norm: str | None = None, unembedding: str | None = None
              ) -> LensHead:
    """Locate final norm and unembedding: manifest overrides, else the family table."""
    config = model.config
    model_type = getattr(config, "model_type", "unknown")
    family = FAMILIES.get(model_type)
    if family is None and final_norm is None:
        raise LensReportError(f"architecture '{model_type}' ({type(model).__name__}) is not "
                              f"known to lensreport: could not find its final norm; "
                              f"{OVERRIDE_HINT}")
    norm_paths = tuple(p.strip() for p in final_norm.split(",")) if final_norm else family
    unembedding_path = unembedding or _output_embeddings_path(model)
    norms = []
    for path in norm_paths:
        try:
            module = _module(model, path)
        except AttributeError:
            raise LensReportError(f"{type(model).__name__} has no module '{path}' (final norm); "
                                  f"{OVERRIDE_HINT}") from None
        if module is not None:
            norms.append(module)
    try:
        head_module = _module(model, unembedding_path)
    except AttributeError:
        head_module = None
    if head_module is None or not isinstance(getattr(head_module, "weight", None), torch.Tensor):
        raise LensReportError(f"{type(model).__name__} has no linear module "
                              f"'{unembedding_path}' (unembedding); {OVERRIDE_HINT}")
    softcap = _config_value(config, "final_logit_softcapping")
    scale = float(_config_value(config, "logit_scale") or 1.0)
    if _config_value(config, "logits_scaling"):
        scale = scale / float(_config_value(config, "logits_scaling"))
    return LensHead(norm_paths=norm_paths, norms=norms, unembedding_path=unembedding_path,
                    unembedding=head_module, softcap=float(softcap) if softcap else None,
                    logit_scale=scale,
                    description={"final_norm": [p for p, m in zip(norm_paths, norms)] or None,
                                 "unembedding": unembedding_path,
                                 "softcap": float(softcap) if softcap else None,
                                 "logit_scale": scale})


def verify_head(model: nn.Module, head: LensHead, input_ids: torch.Tensor) -> float:
    """Check lens(pre-norm last hidden state) == the model's own logits; return max |diff|.

    This proves the head is right (norm, unembedding, soft-capping) for this very model, so
    an unknown or overridden architecture can never give a silently wrong answer.
    """
    captured: list[torch.Tensor] = []
    hook = None
    if head.norms:
        hook = head.norms[0].register_forward_pre_hook(
            lambda _module, args: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            output = model(input_ids=input_ids, output_hidden_states=True)
    finally:
        if hook is not None:
            hook.remove()
    expected = output.logits.float()
    if not head.norms:
        pre_norm = output.hidden_states[-1]
    elif len(captured) != 1:
        raise LensReportError(f"the final norm '{head.norm_paths[0]}' ran {len(captured)} times in "
                              f"one forward pass (expected once): it is not the final norm; "
                              f"{OVERRIDE_HINT}")
    else:
        pre_norm = captured[0]
    with torch.no_grad():
        actual = head.logits(head.normalize(pre_norm))
    if actual.shape != expected.shape:
        raise LensReportError(f"lens logits have shape {tuple(actual.shape)} but the model's "
                              f"are {tuple(expected.shape)}; {OVERRIDE_HINT}")
    difference = float((actual - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    tolerance = 1e-4 if expected.dtype == torch.float32 and \
        next(model.parameters()).dtype == torch.float32 else 2e-2
    if difference > tolerance * scale:
        raise LensReportError(f"{type(model).__name__}: the lens head (final norm "
                              f"{', '.join(head.norm_paths)}, unembedding "
                              f"{head.unembedding_path}) does not reproduce the model's logits "
                              f"(max difference {difference:.3g}); {OVERRIDE_HINT}")
    return difference
