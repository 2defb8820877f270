"""How to read a hidden state as logits, found for any causal LM by watching one forward pass.

The logit lens at layer i < L is ``postprocess(unembed(final_norm(h_i)))``; at i = L it is the
model's own logits (Hugging Face's last hidden state has already passed the final norm, so
it is never normalised twice). ``postprocess`` is whatever the model's forward does after the
unembedding (Gemma-2/3 soft-capping, Cohere's logit scale, Granite's logits scaling, …).

No table of architectures: :func:`find_head` runs the model once on a short input with hooks
on every module, takes the unembedding from ``get_output_embeddings()``, and takes as the
final norm the modules that ran between the last decoder block and the unembedding. The
head is accepted only if it reproduces the model's own logits from the last block's output,
so a wrong guess can never give a silently wrong figure. Manifest overrides (``final_norm:``,
``unembedding:``) replace the discovery and are checked the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import LensReportError, first_line

OVERRIDE_HINT = ("set `final_norm:` and `unembedding:` for this model in the manifest "
                 "(module paths as in model.named_modules(), e.g. final_norm: model.norm, "
                 "unembedding: lm_head)")
# Families whose hidden states are not a residual stream the unembedding can read.
STATE_SPACE_HINT = ("the logit lens reads the residual stream after every block, which this "
                    "architecture's hidden states do not provide (state-space and some hybrid "
                    "models); it is not supported")


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


def num_layers(model: nn.Module) -> int | None:
    value = _config_value(model.config, "num_hidden_layers")
    if value is None:
        value = _config_value(model.config, "n_layer")
    return value if isinstance(value, int) else None


@dataclass
class LensHead:
    """The parts of a model that turn a hidden state into next-token logits."""

    norm_paths: tuple[str, ...]
    norms: list[nn.Module]
    unembedding_path: str
    unembedding: nn.Module
    softcap: float | None = None
    logit_scale: float = 1.0
    check_max_abs_diff: float = 0.0
    description: dict[str, Any] = field(default_factory=dict)

    def normalize(self, hidden: torch.Tensor) -> torch.Tensor:
        for norm in self.norms:
            hidden = norm(hidden)
        return hidden

    @property
    def weight(self) -> torch.Tensor:
        return _materialized(self.unembedding, "weight")

    @property
    def bias(self) -> torch.Tensor | None:
        bias = getattr(self.unembedding, "bias", None)
        return _materialized(self.unembedding, "bias") if isinstance(bias, torch.Tensor) \
            else None

    def postprocess(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model's forward does after the unembedding, in the model's dtype."""
        if self.logit_scale != 1.0:
            logits = logits * self.logit_scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def in_float32(self) -> "LensHead":
        """This head computing in float32 (copies of the norms and the unembedding): what a
        lens being trained differentiates through, whatever the model's dtype (float16
        gradients underflow)."""
        if self.weight.dtype == torch.float32 and all(
                p.dtype == torch.float32 for norm in self.norms for p in norm.parameters()):
            return self
        weight, bias = self.weight, self.bias
        unembedding = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                                device=weight.device, dtype=torch.float32)
        with torch.no_grad():
            unembedding.weight.copy_(weight)
            if bias is not None:
                unembedding.bias.copy_(bias)
        norms = [copy.deepcopy(norm).float() for norm in self.norms]
        return LensHead(self.norm_paths, norms, self.unembedding_path,
                        unembedding.requires_grad_(False), self.softcap, self.logit_scale,
                        self.check_max_abs_diff, dict(self.description))

    def logits(self, normalized: torch.Tensor) -> torch.Tensor:
        """float32 logits for already-normalised hidden states (upcast before any softmax)."""
        weight = self.weight
        normalized = normalized.to(weight.device)
        bias = self.bias
        return self.postprocess(nn.functional.linear(normalized, weight, bias)).float()


def _materialized(module: nn.Module, name: str) -> torch.Tensor:
    """A parameter's values, also when accelerate offloaded it (to the CPU map or to disk:
    the module then holds a 'meta' placeholder and its hook holds the weights). Read once
    and kept on the module, since the lens reads the unembedding tile by tile."""
    tensor = getattr(module, name)
    if tensor.device.type != "meta":
        return tensor
    cache = module.__dict__.setdefault("_lensreport_materialized", {})
    if name not in cache:
        hook = getattr(module, "_hf_hook", None)
        weights = getattr(hook, "weights_map", None)
        if weights is None:
            raise LensReportError(f"the unembedding's {name} is offloaded and its values "
                                  "cannot be read; give it a device in device_map")
        cache[name] = weights[name].to(getattr(hook, "execution_device", None) or "cpu")
    return cache[name]


def _output_embeddings_path(model: nn.Module) -> str:
    output = model.get_output_embeddings()
    if output is not None:
        for name, module in model.named_modules():
            if module is output:
                return name
    raise LensReportError(f"{type(model).__name__} has no output embeddings (unembedding); "
                          f"{OVERRIDE_HINT}")


def _decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The list of decoder blocks: the largest ModuleList with one entry per layer."""
    layers = num_layers(model)
    candidates = [(name, modules) for name, modules in model.named_modules()
                  if isinstance(modules, nn.ModuleList) and len(modules) == layers]
    if not candidates:
        raise LensReportError(f"{type(model).__name__}: found no list of {layers} decoder blocks; "
                              f"{OVERRIDE_HINT}")
    return max(candidates, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's decoder blocks, in order (block i + 1 reads hidden state i)."""
    return _decoder_blocks(model)[1]


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state
    return None


@dataclass
class _Trace:
    """What one forward pass showed: the tensors around the final norm and the unembedding."""

    logits: torch.Tensor
    head_input: torch.Tensor  # what the unembedding read
    head_output: torch.Tensor  # what it returned (before any post-processing)
    block_output: torch.Tensor  # the last decoder block's output: the pre-norm residual stream
    between: list[str]  # outermost modules run after the last block, before the unembedding


def _trace(model: nn.Module, unembedding: nn.Module, blocks_path: str, last_block: nn.Module,
           input_ids: torch.Tensor) -> _Trace:
    names = {module: name for name, module in model.named_modules()}
    events: list[tuple[str, str]] = []  # ("pre" | "post", module name), in execution order
    captured: dict[str, Any] = {}

    def pre(module: nn.Module, args: tuple) -> None:
        events.append(("pre", names.get(module, "?")))
        if module is unembedding and "head_input" not in captured and args:
            captured["head_input"] = args[0].detach()

    def post(module: nn.Module, _args: tuple, output: Any) -> None:
        events.append(("post", names.get(module, "?")))
        if module is unembedding and "head_output" not in captured:
            captured["head_output"] = output.detach()
        if module is last_block:
            tensor = _first_tensor(output)
            if tensor is not None:
                captured["block_output"] = tensor.detach()

    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    model_name = type(model).__name__
    try:
        with torch.no_grad():
            output = model(input_ids=input_ids, use_cache=False)
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise LensReportError(f"{model_name}: a forward pass on a short probe failed "
                              f"({type(exc).__name__}: {first_line(exc, 200)}); is this a "
                              "causal language model?") from exc
    finally:
        for handle in handles:
            handle.remove()
    if "head_input" not in captured or "block_output" not in captured:
        raise LensReportError(f"{model_name}: the forward pass did not run the unembedding and the "
                              f"decoder blocks as expected; {OVERRIDE_HINT}")
    last_block_name = names[last_block]
    unembedding_name = names[unembedding]
    block_done = max(i for i, event in enumerate(events) if event == ("post", last_block_name))
    head_start = next(i for i, event in enumerate(events) if event == ("pre", unembedding_name))
    ran = [name for kind, name in events[block_done + 1:head_start] if kind == "pre"]
    # Outermost only (a norm's own submodules run inside it), and never a container of the
    # blocks or of the unembedding (the base model finishes after the final norm).
    ran = [name for name in ran
           if not (blocks_path == name or blocks_path.startswith(f"{name}.") or name == "")
           and not any(name.startswith(f"{other}.") for other in ran if other != name)]
    return _Trace(output.logits.detach(), captured["head_input"], captured["head_output"],
                  captured["block_output"], ran)


def _close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> bool:
    if actual.shape != expected.shape:
        return False
    actual, expected = actual.float(), expected.float()
    scale = max(1.0, float(expected.abs().max()))
    return bool(float((actual - expected).abs().max()) <= tolerance * scale)


def _postprocessing(model: nn.Module, trace: _Trace, tolerance: float
                    ) -> tuple[float | None, float]:
    """(softcap, logit scale) that turn the unembedding's output into the model's logits.

    Candidates come from the config (``final_logit_softcapping``, ``logit_scale``,
    ``logits_scaling``: a config may carry one its forward ignores) and from the two tensors
    (a constant scale a family applies in its own code); the first that reproduces the
    model's logits wins. The whole head is checked again afterwards.
    """
    config = model.config
    softcap = _config_value(config, "final_logit_softcapping")
    softcap = float(softcap) if softcap else None
    scale = float(_config_value(config, "logit_scale") or 1.0)
    if _config_value(config, "logits_scaling"):
        scale = scale / float(_config_value(config, "logits_scaling"))
    raw, logits = trace.head_output.float(), trace.logits.float()
    candidates = [(softcap, scale), (softcap, 1.0), (None, scale), (None, 1.0)]
    mask = raw.abs() > 1e-3 * max(1e-6, float(raw.abs().max()))
    if raw.shape == logits.shape and bool(mask.any()):
        candidates.append((None, float((logits[mask] / raw[mask]).median())))
    for cap, factor in candidates:
        head = LensHead((), [], "", nn.Identity(), softcap=cap, logit_scale=factor)
        if _close(head.postprocess(raw), logits, tolerance):
            return cap, factor
    return softcap, scale


def _tolerance(model: nn.Module) -> float:
    dtype = next(model.parameters()).dtype
    return 1e-4 if dtype == torch.float32 else 2e-2


def find_head(model: nn.Module, probe_ids: torch.Tensor, final_norm: str | None = None,
              unembedding: str | None = None) -> LensHead:
    """Locate final norm and unembedding (or take the manifest's), and prove them right.

    One forward pass on ``probe_ids`` with hooks on every module; the head must reproduce the
    model's own logits from the last block's output (``check_max_abs_diff`` records by how
    much it differs), and the base model's last hidden state must be what the unembedding
    reads (so the lens's last row is the model's output and is never normalised twice).
    """
    name = type(model).__name__
    unembedding_path = unembedding or _output_embeddings_path(model)
    try:
        head_module = _module(model, unembedding_path)
    except AttributeError:
        head_module = None
    if head_module is None or not isinstance(getattr(head_module, "weight", None), torch.Tensor):
        raise LensReportError(f"{name} has no linear module '{unembedding_path}' (unembedding); "
                              f"{OVERRIDE_HINT}")
    blocks_path, blocks = _decoder_blocks(model)
    trace = _trace(model, head_module, blocks_path, blocks[-1], probe_ids)
    if final_norm:
        norm_paths = tuple(p.strip() for p in final_norm.split(",") if p.strip())
    else:
        norm_paths = tuple(trace.between)
    norms = []
    for path in norm_paths:
        try:
            module = _module(model, path)
        except AttributeError:
            raise LensReportError(f"{name} has no module '{path}' (final norm); "
                                  f"{OVERRIDE_HINT}") from None
        if module is not None:
            norms.append(module)
    tolerance = _tolerance(model)
    softcap, scale = _postprocessing(model, trace, tolerance)
    head = LensHead(norm_paths=norm_paths, norms=norms, unembedding_path=unembedding_path,
                    unembedding=head_module, softcap=softcap, logit_scale=scale)
    with torch.no_grad():
        actual = head.logits(head.normalize(trace.block_output))
    expected = trace.logits.float()
    if actual.shape != expected.shape:
        raise LensReportError(f"{name}: lens logits have shape {tuple(actual.shape)} but the "
                              f"model's are {tuple(expected.shape)}; {OVERRIDE_HINT}")
    difference = float((actual - expected.to(actual.device)).abs().max())
    if not _close(actual, expected.to(actual.device), tolerance):
        shown = ", ".join(norm_paths) or "none found"
        raise LensReportError(f"{name}: the lens head (final norm: {shown}; unembedding: "
                              f"{unembedding_path}) does not reproduce the model's logits from "
                              f"its last block's output (max difference {difference:.3g}); "
                              f"{OVERRIDE_HINT}")
    head.check_max_abs_diff = difference
    head.description = {"final_norm": [p for p, m in zip(norm_paths, norms) if m is not None]
                        or None, "unembedding": unembedding_path, "softcap": softcap,
                        "logit_scale": scale}
    return head


def check_hidden_states(model: nn.Module, head: LensHead, input_ids: torch.Tensor) -> None:
    """The base model's hidden states must be the residual stream the lens reads.

    That is: L+1 of them, the i-th being exactly what block i reads (so row i is the state
    after i blocks), and the last being what the unembedding reads (so the lens's last row is
    the model's output, never normalised twice). State-space and some hybrid models break
    this; they get one clear line instead of a wrong figure.
    """
    name = f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')})"
    layers = num_layers(model)
    _, blocks = _decoder_blocks(model)
    block_inputs: list[torch.Tensor | None] = []

    def capture(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        value = args[0] if args else kwargs.get("hidden_states")
        block_inputs.append(value.detach() if isinstance(value, torch.Tensor) else None)

    handles = [block.register_forward_pre_hook(capture, with_kwargs=True) for block in blocks]
    try:
        with torch.no_grad():
            output = model.base_model(input_ids=input_ids, output_hidden_states=True,
                                      use_cache=False)
            model_logits = model(input_ids=input_ids, use_cache=False).logits.float()
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise LensReportError(f"{name}: its base model cannot run on its own with hidden "
                              f"states ({type(exc).__name__}: {first_line(exc, 200)}); this "
                              "family is not supported by the lens (its blocks need inputs "
                              "the base model does not pass)") from exc
    finally:
        for handle in handles:
            handle.remove()
    hidden = getattr(output, "hidden_states", None)
    last = getattr(output, "last_hidden_state", None)
    if hidden is None or last is None or len(hidden) != (layers or 0) + 1:
        count = "no" if hidden is None else str(len(hidden))
        raise LensReportError(f"{name}: its base model returns {count} hidden states for "
                              f"{layers} layers, not one per block plus the embeddings; "
                              f"{STATE_SPACE_HINT}")
    tolerance = _tolerance(model)
    for index, block_input in enumerate(block_inputs[:len(blocks)]):
        if block_input is not None and not _close(hidden[index], block_input, tolerance):
            raise LensReportError(f"{name}: hidden state {index} is not what block {index} "
                                  f"reads; {STATE_SPACE_HINT}")
    with torch.no_grad():
        own = head.logits(last)
    if not _close(own, model_logits.to(own.device), tolerance):
        raise LensReportError(f"{name}: the base model's last hidden state is not what the "
                              f"unembedding reads, so the lens's last row would not be the "
                              f"model's output; {STATE_SPACE_HINT}")
