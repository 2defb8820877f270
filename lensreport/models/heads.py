"""How to read a hidden state as logits, found for any causal LM by watching one forward pass.

The logit lens at layer i < L is ``postprocess(unembed(final_norm(h_i)))``; at i = L it is the
model's own logits (what the unembedding reads, already through the final norm, so it is
never normalised twice; models/states.py reads the rows). ``postprocess`` is whatever the
model's forward does after the unembedding (Gemma-2/3 soft-capping, Cohere's logit scale, Granite's logits scaling, …).

No table of architectures: :func:`find_head` runs the model once on a short input with hooks
on every module, takes the unembedding from ``get_output_embeddings()``, and takes as the
final norm the modules that ran between the last decoder block and the unembedding (a module
that holds the unembedding runs up to it; modules off the stream's path are dropped). The
head is accepted only if it reproduces the model's own logits from the stream after the last
block, so a wrong guess can never give a silently wrong figure. Manifest overrides
(``final_norm:``, ``unembedding:``) replace the discovery and are checked the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch
from torch import nn

from ..errors import LensReportError, first_line

OVERRIDE_HINT = ("set `final_norm:` and `unembedding:` for this model in the manifest "
                 "(module paths as in model.named_modules(), e.g. final_norm: model.norm, "
                 "unembedding: lm_head)")
# What a model's own forward may raise on an input it cannot take (shown in one line).
FORWARD_ERRORS = (RuntimeError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                  NotImplementedError, AssertionError)


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
    blocks_path: str = ""  # the decoder blocks' list (models/states.py reads their inputs)
    # A constant the forward multiplies the normed stream by before the unembedding (Inkling
    # divides it by its muP width multiplier): part of the final norm here.
    input_scale: float = 1.0

    def normalize(self, hidden: torch.Tensor) -> torch.Tensor:
        for norm in self.norms:
            hidden = norm(hidden)
        return hidden * self.input_scale if self.input_scale != 1.0 else hidden

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
                        self.check_max_abs_diff, dict(self.description), self.blocks_path,
                        self.input_scale)

    def logits(self, normalized: torch.Tensor) -> torch.Tensor:
        """float32 logits for already-normalised hidden states (upcast before any softmax)."""
        weight = self.weight
        normalized = normalized.to(weight.device)
        bias = self.bias
        return self.postprocess(nn.functional.linear(normalized, weight, bias)).float()


class Reached(Exception):
    """Raised by a hook on the unembedding: what it reads is captured, the rest not needed."""


class UpTo(nn.Module):
    """A module that holds the unembedding, run up to it: what it hands the unembedding.
    BERT's and RoBERTa's prediction heads transform the stream (dense, an activation that is
    no module, a norm) inside the module that also holds their decoder."""

    def __init__(self, container: nn.Module, inner: str) -> None:
        super().__init__()
        self.container = container
        self.inner = inner

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        box: dict[str, torch.Tensor] = {}

        def grab(_module: nn.Module, args: tuple) -> None:
            box["input"] = args[0]
            raise Reached

        handle = self.container.get_submodule(self.inner).register_forward_pre_hook(grab)
        try:
            self.container(hidden)
        except Reached:
            pass
        finally:
            handle.remove()
        if "input" not in box:
            raise LensReportError(f"'{self.inner}' did not run inside its container")
        return box["input"]


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
            raise LensReportError(f"{type(module).__name__}'s {name} is offloaded and its "
                                  "values cannot be read; give it a device in device_map")
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


def _block_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The lists that may be the decoder blocks, largest first: ModuleLists with one entry
    per layer, not inside another list (LongCat's two attentions per layer)."""
    layers = num_layers(model)
    lists = {name for name, modules in model.named_modules() if isinstance(modules, nn.ModuleList)}
    candidates = [(name, modules) for name, modules in model.named_modules()
                  if isinstance(modules, nn.ModuleList) and len(modules) == layers
                  and not any(name.startswith(f"{outer}.") for outer in lists)]
    if not candidates:
        raise LensReportError(f"{type(model).__name__}: found no list of {layers} decoder blocks; "
                              f"{OVERRIDE_HINT}")
    return sorted(candidates, key=lambda item: -sum(p.numel() for p in item[1].parameters()))


def decoder_blocks(model: nn.Module, head: "LensHead") -> nn.ModuleList:
    """The decoder blocks the head was found behind."""
    return dict(_block_lists(model))[head.blocks_path]


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
    block_output: torch.Tensor  # the stream after the last block, as the final norm reads it
    between: list[str]  # outermost modules run after the last block, before the unembedding
    blocks_path: str  # the decoder blocks' list


def _trace(model: nn.Module, unembedding: nn.Module, input_ids: torch.Tensor) -> _Trace:
    """The forward pass on a probe; the decoder blocks are the candidate list whose last
    block finished last before the unembedding ran (a vision tower's list of as many
    blocks does not run on text)."""
    candidates = _block_lists(model)
    last_blocks = {modules[-1]: name for name, modules in candidates}
    names = {module: name for name, module in model.named_modules()}
    events: list[tuple[str, str]] = []  # ("pre" | "post", module name), in execution order
    captured: dict[str, Any] = {}
    inputs: dict[int, torch.Tensor] = {}  # by event: what a module was called on

    def pre(module: nn.Module, args: tuple) -> None:
        events.append(("pre", names.get(module, "?")))
        if args and isinstance(args[0], torch.Tensor):
            inputs[len(events) - 1] = args[0].detach()
        if module is unembedding and "head_input" not in captured and args:
            captured["head_input"] = args[0].detach()

    def post(module: nn.Module, _args: tuple, output: Any) -> None:
        events.append(("post", names.get(module, "?")))
        if module is unembedding and "head_output" not in captured:
            captured["head_output"] = output.detach()
        if module in last_blocks:
            tensor = _first_tensor(output)
            if tensor is not None:
                captured[last_blocks[module]] = tensor.detach()

    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    model_name = type(model).__name__
    try:
        with torch.no_grad():
            output = model(input_ids=input_ids, use_cache=False)
    except FORWARD_ERRORS as exc:
        raise LensReportError(f"{model_name}: a forward pass on a short probe failed "
                              f"({type(exc).__name__}: {first_line(exc, 200)}); is this a "
                              "causal language model?") from exc
    finally:
        for handle in handles:
            handle.remove()
    unembedding_name = names[unembedding]
    head_start = next((i for i, event in enumerate(events) if event == ("pre", unembedding_name)),
                      None)
    finished = {path: max(i for i, event in enumerate(events)
                          if event == ("post", names[modules[-1]]))
                for path, modules in candidates
                if path in captured and head_start is not None}
    finished = {path: i for path, i in finished.items() if i < head_start}
    if "head_input" not in captured or not finished:
        raise LensReportError(f"{model_name}: the forward pass did not run the unembedding and the "
                              f"decoder blocks as expected; {OVERRIDE_HINT}")
    blocks_path = max(finished, key=finished.get)
    block_done = finished[blocks_path]
    _whole_layers(model_name, dict(candidates), blocks_path, events, names)
    ran = [name for kind, name in events[block_done + 1:head_start] if kind == "pre"]
    # Outermost only (a norm's own submodules run inside it), and never a container of the
    # blocks (the base model finishes after the final norm); a container of the unembedding
    # (BERT's prediction head) is run up to it (UpTo).
    ran = [name for name in ran
           if not (blocks_path == name or blocks_path.startswith(f"{name}.") or name == "")]
    ran = [name for name in ran
           if not any(name.startswith(f"{other}.") for other in ran if other != name)]
    # What the head reads: the first module after the blocks gets the stream as the model
    # hands it on (RWKV halves it after every ``rescale_every`` blocks, outside them).
    first = next((i for i in range(block_done + 1, head_start)
                  if ran and events[i] == ("pre", ran[0])), None)
    stream = inputs.get(first) if first is not None else None
    if stream is None or stream.shape != captured[blocks_path].shape:
        stream = captured[blocks_path]
    return _Trace(output.logits.detach(), captured["head_input"], captured["head_output"],
                  stream, ran, blocks_path)


def _whole_layers(model_name: str, candidates: dict[str, nn.ModuleList], blocks_path: str,
                  events: list[tuple[str, str]], names: dict[nn.Module, str]) -> None:
    """Refuse a model whose layers are spread over per-layer lists of parts (XLM:
    attentions, norms, feed-forwards, each a list): a part of another list that runs between
    two blocks, outside both, means there is no one state between blocks to read."""
    def spans(modules: nn.ModuleList) -> list[tuple[int, int]]:
        found = []
        for module in modules:
            name = names[module]
            starts = [i for i, event in enumerate(events) if event == ("pre", name)]
            ends = [i for i, event in enumerate(events) if event == ("post", name)]
            if starts and ends:
                found.append((starts[0], ends[-1]))
        return found

    blocks = spans(candidates[blocks_path])
    if not blocks:
        return
    for path, modules in candidates.items():
        if path == blocks_path:
            continue
        for start, _ in spans(modules):
            inside_range = blocks[0][0] < start < blocks[-1][1]
            if inside_range and not any(a < start < b for a, b in blocks):
                raise LensReportError(
                    f"{model_name}: its layers are not modules but per-layer lists of parts "
                    f"('{blocks_path}' and '{path}' take turns), so there is no one state "
                    "between blocks to read; this family is not supported by the lens")


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
        cap = _solved_softcap(raw, logits)
        if cap is not None:
            candidates.append((cap, 1.0))
    for cap, factor in candidates:
        head = LensHead((), [], "", nn.Identity(), softcap=cap, logit_scale=factor)
        if _close(head.postprocess(raw), logits, tolerance):
            return cap, factor
    return softcap, scale


def _solved_softcap(raw: torch.Tensor, logits: torch.Tensor) -> float | None:
    """The c with c·tanh(raw/c) = logits at the largest raw logit, where the model caps
    its logits under a config key of its own (RecurrentGemma's ``logits_soft_cap``, xLSTM's
    ``output_logit_soft_cap``); checked on every logit by the caller."""
    index = int(raw.abs().flatten().argmax())
    r, target = float(raw.flatten()[index]), float(logits.flatten()[index])
    r, target = abs(r), target if r > 0 else -target
    if not 0 < target < r * (1 - 1e-6):
        return None
    low, high = target, max(target, 1.0) * 1e6  # c·tanh(r/c) rises with c, from ~c to r
    for _ in range(200):
        middle = (low * high) ** 0.5
        if middle * torch.tanh(torch.tensor(r / middle, dtype=torch.float64)).item() < target:
            low = middle
        else:
            high = middle
    return (low * high) ** 0.5


def _tolerance(model: nn.Module) -> float:
    dtype = next(model.parameters()).dtype
    return 1e-4 if dtype == torch.float32 else 2e-2


def _input_scale(head: LensHead, trace: _Trace, tolerance: float) -> float:
    """1, or the constant between the normed stream and what the unembedding read, where
    the forward applies one after its final norm."""
    try:
        with torch.no_grad():
            normed = head.normalize(trace.block_output).float()
    except FORWARD_ERRORS:
        return 1.0
    read = trace.head_input.float()
    if normed.shape != read.shape or _close(normed, read, tolerance):
        return 1.0
    mask = normed.abs() > 1e-3 * max(1e-6, float(normed.abs().max()))
    if not bool(mask.any()):
        return 1.0
    factor = float((read[mask] / normed[mask]).median())
    return factor if _close(normed * factor, read, tolerance) else 1.0


def _passes_through(module: nn.Module, hidden: torch.Tensor) -> bool:
    with torch.no_grad():
        try:
            return module(hidden) is hidden
        except FORWARD_ERRORS:
            return False


def _on_path(paths: tuple[str, ...], norms: list[nn.Module | None], block_output: torch.Tensor,
             unembedding: nn.Module, softcap: float | None, scale: float,
             expected: torch.Tensor, tolerance: float
             ) -> tuple[tuple[str, ...], list[nn.Module | None]]:
    """The modules (all, else the largest ordered subset) that reproduce the logits."""
    count = len(paths)
    for size in range(count, max(-1, count - 4), -1):
        for chosen in combinations(range(count), size):
            head = LensHead((), [norms[i] for i in chosen if norms[i] is not None], "",
                            unembedding, softcap=softcap, logit_scale=scale)
            try:
                with torch.no_grad():
                    actual = head.logits(head.normalize(block_output))
            except FORWARD_ERRORS:
                continue
            if _close(actual, expected.to(actual.device), tolerance):
                return tuple(paths[i] for i in chosen), [norms[i] for i in chosen]
    return paths, norms


def find_head(model: nn.Module, probe_ids: torch.Tensor, final_norm: str | None = None,
              unembedding: str | None = None) -> LensHead:
    """Locate final norm and unembedding (or take the manifest's), and prove them right.

    One forward pass on ``probe_ids`` with hooks on every module; the head must reproduce the
    model's own logits from the stream after the last block (``check_max_abs_diff`` records
    by how much it differs); models/states.py then checks the rows the lens reads.
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
    trace = _trace(model, head_module, probe_ids)
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
        if module is not None and unembedding_path.startswith(f"{path}."):
            module = UpTo(module, unembedding_path[len(path) + 1:])
        norms.append(module)
    tolerance = _tolerance(model)
    softcap, scale = _postprocessing(model, trace, tolerance)
    expected = trace.logits.float()
    if not final_norm:
        # Some modules that ran after the last block are off the stream's path (BERT's
        # pooler): the largest ordered subset that reproduces the logits is the norm.
        norm_paths, norms = _on_path(norm_paths, norms, trace.block_output, head_module,
                                     softcap, scale, expected, tolerance)
    norms = [None if isinstance(m, UpTo) and _passes_through(m, trace.block_output) else m
             for m in norms]  # a container that only calls the unembedding (BertGeneration)
    head = LensHead(norm_paths=norm_paths, norms=[m for m in norms if m is not None],
                    unembedding_path=unembedding_path, unembedding=head_module,
                    softcap=softcap, logit_scale=scale, blocks_path=trace.blocks_path)
    head.input_scale = _input_scale(head, trace, tolerance)
    try:
        with torch.no_grad():
            actual = head.logits(head.normalize(trace.block_output))
    except FORWARD_ERRORS as exc:
        shown = ", ".join(norm_paths) or "none found"
        raise LensReportError(f"{name}: the lens head (final norm: {shown}; unembedding: "
                              f"{unembedding_path}) cannot read its last block's output "
                              f"({type(exc).__name__}: {first_line(exc, 160)}); "
                              f"{OVERRIDE_HINT}") from exc
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
