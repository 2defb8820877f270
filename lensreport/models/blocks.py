"""What each decoder block adds to the residual stream, found from the model itself.

No table of architectures: :func:`find_blocks` runs the model once on a short probe with
hooks on every module inside the decoder blocks, and takes as a block's *parts* the modules
whose outputs sum to the block's residual update (``h_b − h_{b−1}``): an attention and an
MLP, a state-space block's single mixer (Mamba, Nemotron-H), or three (Falcon-H1's Mamba,
attention and MLP); the outermost such modules (so Gemma's post-attention and post-feedforward
norms count as part of what the block adds, and an MoE block's MLP is the sum of its
experts), executed in order, none inside another (see :func:`_parts` for which wins). A
two-part block is *sequential* when a module inside it reads ``h_{b−1} + attn_b`` (the state
after the attention, a row of its own); parallel blocks (GPT-NeoX, GPT-J, Phi, Falcon) have
none. Where block 1 first norms its input (RWKV's pre_ln), the blocks add to that norm's
output. The attention of a two-part block splits into heads where its output is an output
projection's, linear over the concatenated heads. The final norm's linear map at a given
scale (the cached-scale convention of direct logit attribution) is found the same way: a
candidate is accepted only when it reproduces the norm's output. Anything that does not
check out raises LensReportError with one line saying why; the lens still runs without a
decomposition.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import LensReportError
from .heads import (LensHead, _close, _config_value, _first_tensor, _materialized, _tolerance,
                    decoder_blocks)
from .states import stream_argument

EPSILON_NAMES = ("variance_epsilon", "eps", "epsilon", "layer_norm_eps")
# Tried (and checked) where a norm keeps its epsilon in its code only (OLMo's LayerNorm).
DEFAULT_EPSILONS = (1e-5, 1e-6)


@dataclass(frozen=True)
class HeadSplit:
    """An attention's output projection: ``output = z @ W_O^T + b_O``, z the concatenated
    heads (``heads`` slices of equal width, head-major, as every Hugging Face attention
    merges them)."""

    projection: nn.Module
    heads: int
    transposed: bool  # Conv1D (GPT-2): weight is (inputs, outputs)

    def weight(self) -> torch.Tensor:
        """W_O as (d_model, heads · d_head)."""
        weight = self.projection.weight
        return weight.T if self.transposed else weight

    def bias(self) -> torch.Tensor | None:
        bias = getattr(self.projection, "bias", None)
        return bias if isinstance(bias, torch.Tensor) else None


# A block adds this many parts at most (Falcon-H1: Mamba, attention and MLP side by side).
MOST_PARTS = 3
# Component names by the number of parts (lens/decompose.py: "<name>.<block>"): two parts
# are the attention then the MLP, one part a mixer; three are named by their modules (their
# paths in the block, dots as underscores), since their order says nothing of what they are
# (Falcon-H1 runs its Mamba before its attention).
PART_NAMES = {1: ("mixer",), 2: ("attn", "mlp")}


@dataclass(frozen=True)
class Part:
    """A module whose output is part of what its block adds to the stream."""

    module: nn.Module
    path: str  # inside the block
    name: str  # the component's name before ".<block>"


@dataclass(frozen=True)
class BlockParts:
    """One block's parts, in the order they run (their outputs sum to what it adds)."""

    parts: tuple[Part, ...]
    sequential: bool  # two parts, and the second reads the stream after the first
    heads: HeadSplit | None  # the first of two parts' heads, where they split


@dataclass(frozen=True)
class NormMap:
    """The final norm as ``s · A c + β``: ``A`` multiplies by ``weight`` (after removing the
    mean where ``centers``: LayerNorm), ``s`` is 1/sqrt(mean square (or variance) + eps) of
    the full stream at that position, ``β`` the norm's bias."""

    weight: torch.Tensor | None  # None: no final norm (identity)
    bias: torch.Tensor | None
    centers: bool
    eps: float

    def scale(self, stream: torch.Tensor) -> torch.Tensor:
        """s per position, from the whole residual stream there (float64)."""
        if self.weight is None:
            return torch.ones(stream.shape[:-1], dtype=torch.float64, device=stream.device)
        stream = stream.double()
        if self.centers:
            stream = stream - stream.mean(-1, keepdim=True)
        return torch.rsqrt(stream.pow(2).mean(-1) + self.eps)

    def apply(self, stream: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``s · A x + β`` in float64 (what the final norm computes, with ``s`` given)."""
        stream = stream.double()
        if self.weight is None:
            return stream
        if self.centers:
            stream = stream - stream.mean(-1, keepdim=True)
        out = stream * scale[..., None] * self.weight.double().to(stream.device)
        return out if self.bias is None else out + self.bias.double().to(stream.device)


@dataclass(frozen=True)
class Structure:
    """What the decomposition needs of a model: its blocks' parts and its final norm's map.
    ``heads_note`` says why heads are not split (None where every block's are)."""

    blocks: tuple[BlockParts, ...]
    modules: tuple[nn.Module, ...]  # the decoder blocks themselves
    norm: NormMap
    heads_note: str | None
    # A norm block 1 applies to its input before adding to it (RWKV's pre_ln): the stream
    # the blocks add to starts at its output, so the "embed" component is that output.
    input_norm: nn.Module | None = None
    final_norm: nn.Module | None = None  # the module ``norm`` maps (None: no final norm)

    @property
    def sequential(self) -> bool:
        """Every block has a state after its attention (mid rows exist)."""
        return all(part.sequential for part in self.blocks)

    @property
    def uneven(self) -> tuple[int, int] | None:
        """(block number, its part count) of the first block that is not two parts."""
        return _uneven(self.blocks)


def _uneven(blocks: Sequence[BlockParts]) -> tuple[int, int] | None:
    return next(((b, len(block.parts)) for b, block in enumerate(blocks, 1)
                 if len(block.parts) != 2), None)


@dataclass
class _Call:
    path: str
    depth: int
    order: int
    params: int
    input: torch.Tensor | None
    output: torch.Tensor | None
    calls: int = 1


def _trace_blocks(model: nn.Module, blocks: nn.ModuleList, probe: torch.Tensor
                  ) -> tuple[list[dict[nn.Module, _Call]], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per block: every inner module's first call (input and output, cloned: some families
    add in place afterwards), and the block's own input and output."""
    traces: list[dict[nn.Module, _Call]] = [{} for _ in blocks]
    ends: list[list[torch.Tensor | None]] = [[None, None] for _ in blocks]
    counter = [0]
    handles = []

    def watch(index: int, path: str, module: nn.Module) -> None:
        params = sum(p.numel() for p in module.parameters())

        def pre(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            known = traces[index].get(module)
            if known is not None:
                known.calls += 1
                return
            value = stream_argument(args, kwargs)
            counter[0] += 1
            traces[index][module] = _Call(path, path.count(".") + 1, counter[0], params,
                                          None if value is None else value.detach().clone(),
                                          None)

        def post(_module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
            call = traces[index][module]
            if call.calls == 1 and call.output is None:
                tensor = _first_tensor(output)
                call.output = None if tensor is None else tensor.detach().clone()

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))

    def block_hooks(index: int, block: nn.Module) -> None:
        def pre(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            value = stream_argument(args, kwargs)
            if ends[index][0] is None and value is not None:
                ends[index][0] = value.detach().clone()

        def post(_module: nn.Module, _args: tuple, output: Any) -> None:
            tensor = _first_tensor(output)
            if ends[index][1] is None and tensor is not None:
                ends[index][1] = tensor.detach().clone()

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(block.register_forward_hook(post))

    for index, block in enumerate(blocks):
        block_hooks(index, block)
        for path, module in block.named_modules():
            if path:
                watch(index, path, module)
    try:
        with torch.no_grad():
            model(input_ids=probe, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    if any(a is None or b is None for a, b in ends):
        raise LensReportError("its decoder blocks' inputs and outputs could not be read")
    return traces, [(a, b) for a, b in ends]  # type: ignore[misc]


def _inside(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(f"{outer}.")


def _parts(calls: dict[nn.Module, _Call], update: torch.Tensor, tolerance: float
           ) -> tuple[_Call, ...] | None:
    """The outermost modules (executed in that order, none inside another) whose outputs sum
    to ``update``: the shallowest deepest part first (Nemotron-H's MoE block is one mixer,
    not its routed plus its shared experts), then two parts before one before three, then
    the least total depth, the most parameters, the earliest."""
    shaped = sorted((c for c in calls.values() if c.calls == 1 and c.output is not None
                     and c.output.shape == update.shape), key=lambda c: c.order)
    best: tuple | None = None
    for rank, count in enumerate((2, 1, MOST_PARTS)):
        # Only shallower parts can beat what is found (a block of attention and MLP
        # searches no triples).
        allowed = [c for c in shaped if best is None or c.depth < best[0]]
        for combination in combinations(allowed, count):
            if any(_inside(a.path, b.path) or _inside(b.path, a.path)
                   for a, b in combinations(combination, 2)):
                continue
            if _close(sum(c.output for c in combination), update, tolerance):  # type: ignore
                key = (max(c.depth for c in combination), rank,
                       sum(c.depth for c in combination), -sum(c.params for c in combination),
                       tuple(c.order for c in combination), combination)
                if best is None or key[:5] < best[:5]:
                    best = key
    return None if best is None else best[5]


def _post_norm(calls: dict[nn.Module, _Call], after: torch.Tensor, tolerance: float
               ) -> str | None:
    """The path of a norm whose output is the block's output (a norm after the residual
    add: post-LN, as BERT and the original transformer), if there is one."""
    return next((c.path for module, c in calls.items() if _is_norm(module)
                 and c.output is not None and _close(c.output, after, tolerance)), None)


def _is_norm(module: nn.Module) -> bool:
    """A norm by its class's name (LayerNorm, RMSNorm, LlamaRMSNorm, RwkvLayerNorm, ...)."""
    return "norm" in type(module).__name__.lower()


def _input_norm(calls: dict[nn.Module, _Call], before: torch.Tensor, after: torch.Tensor,
                tolerance: float) -> tuple[nn.Module, _Call] | None:
    """A norm that reads the block's input first (RWKV's block 1 norms the embeddings with
    its pre_ln before adding to them), where there is one."""
    if not calls:
        return None
    module, call = min(calls.items(), key=lambda item: item[1].order)  # the first to run
    if _is_norm(module) and call.calls == 1 and call.input is not None \
            and call.output is not None and call.output.shape == after.shape \
            and _close(call.input, before, tolerance):
        return module, call
    return None


def _names(paths: list[str]) -> tuple[str, ...]:
    """The components' names of a block with these parts (PART_NAMES)."""
    return PART_NAMES.get(len(paths)) or tuple(path.replace(".", "_") for path in paths)


def _heads(model: nn.Module, module: nn.Module, output: torch.Tensor,
           calls: dict[nn.Module, _Call], tolerance: float) -> HeadSplit | None:
    """The attention's output projection, where the attention's output is exactly it."""
    heads = _config_value(model.config, "num_attention_heads") or \
        _config_value(model.config, "n_head")
    if not isinstance(heads, int) or heads < 1:
        return None
    for inner in module.modules():
        call = calls.get(inner)
        weight = getattr(inner, "weight", None)
        if inner is module or call is None or call.input is None or call.output is None or \
                not isinstance(weight, torch.Tensor) or weight.dim() != 2 or call.calls != 1 \
                or weight.device.type == "meta":  # offloaded: its values are not at hand
            continue
        if call.input.shape[-1] % heads or not _close(call.output, output, tolerance):
            continue
        bias = getattr(inner, "bias", None)
        bias = bias if isinstance(bias, torch.Tensor) else None
        for transposed in (False, True):
            matrix = weight.T if transposed else weight
            if matrix.shape != (output.shape[-1], call.input.shape[-1]):
                continue
            if _close(nn.functional.linear(call.input, matrix, bias), call.output, tolerance):
                return HeadSplit(inner, heads, transposed)
    return None


def _norm_map(head: LensHead, stream: torch.Tensor, tolerance: float) -> NormMap:
    """The final norm as a NormMap, accepted only when it reproduces the norm's output."""
    if not head.norms:
        return NormMap(None, None, False, 0.0)
    if len(head.norms) != 1:
        raise LensReportError(f"its final head has {len(head.norms)} modules before the "
                              "unembedding (one norm is needed)")
    norm = head.norms[0]
    weight = getattr(norm, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.device.type == "meta":
        weight = _materialized(norm, "weight")  # offloaded (device_map): its hook's copy
    eps = next((getattr(norm, name) for name in EPSILON_NAMES
                if isinstance(getattr(norm, name, None), float)), None)
    width = stream.shape[-1]
    if weight is None:  # a norm without weights (OLMo, nanochat)
        weight = torch.ones(width, device=stream.device)
    if not isinstance(weight, torch.Tensor) or weight.shape != (width,):
        raise LensReportError(f"its final norm ({type(norm).__name__}) has no weight vector "
                              "to read")
    bias = getattr(norm, "bias", None)
    if isinstance(bias, torch.Tensor) and bias.device.type == "meta":
        bias = _materialized(norm, "bias")
    bias = bias.detach() if isinstance(bias, torch.Tensor) else None
    # Also on the stream shifted by its RMS along 1: a LayerNorm ignores the shift, an
    # RMSNorm does not (a stream whose mean is near zero cannot tell them apart in bf16).
    shifted = stream + stream.float().pow(2).mean().sqrt().to(stream.dtype)
    with torch.no_grad():
        expected = [norm(stream).double(), norm(shifted).double()]
    weight = weight.detach()
    for centers in (False, True):
        for candidate in (weight, 1.0 + weight.float()):
            for epsilon in ([eps] if eps is not None else DEFAULT_EPSILONS):
                mapped = NormMap(candidate, bias, centers, float(epsilon))
                if all(_close(mapped.apply(x, mapped.scale(x)), y, tolerance)
                       for x, y in zip((stream, shifted), expected)):
                    return mapped
    raise LensReportError(f"its final norm ({type(norm).__name__}) is neither an RMSNorm nor "
                          "a LayerNorm of its weight")


def find_blocks(model: nn.Module, head: LensHead, probe: torch.Tensor) -> Structure:
    """Each block's parts (proven to sum to its residual update on ``probe``), the heads of
    two-part blocks' attention where they split, and the final norm's map. Raises
    LensReportError with the reason (one line) where a block or the norm does not check
    out."""
    with torch.no_grad():
        return _find_blocks(model, head, probe)


def _find_blocks(model: nn.Module, head: LensHead, probe: torch.Tensor) -> Structure:
    blocks = decoder_blocks(model, head)
    traces, ends = _trace_blocks(model, blocks, probe)
    tolerance = _tolerance(model)
    parts, heads_missing = [], False
    input_norm: tuple[nn.Module, _Call] | None = None
    for number, (block, calls, (before, after)) in enumerate(zip(blocks, traces, ends), 1):
        update = after - before
        for call in calls.values():  # Llama-4's MoE returns its tokens flattened: (B·T, d)
            if call.output is not None and call.output.shape != update.shape and \
                    call.output.shape[-1] == update.shape[-1] and \
                    call.output.numel() == update.numel():
                call.output = call.output.reshape(update.shape)
        found = _parts(calls, update, tolerance)
        if found is None and number == 1:
            input_norm = _input_norm(calls, before, after, tolerance)
            if input_norm is not None:
                before = input_norm[1].output
                found = _parts({m: c for m, c in calls.items() if m is not input_norm[0]},
                               after - before, tolerance)
                input_norm = input_norm if found is not None else None
        if found is None:
            post = _post_norm(calls, after, tolerance)
            if post is not None:
                raise LensReportError(
                    f"block {number}'s output is its norm's ({post}), applied after the "
                    "residual add (post-LN), so it is not its input plus what its modules add")
            raise LensReportError(f"block {number}'s residual update is not the sum of one, two "
                                  f"or three of its modules' outputs (attention + MLP, a "
                                  "mixer, ...)")
        modules = {call.path: module for module, call in calls.items()}
        names = _names([call.path for call in found])
        sequential, split = False, None
        if len(found) == 2:
            attention = found[0]
            mid = before + attention.output
            sequential = any(call.order > attention.order and call.input is not None
                             and not _inside(call.path, attention.path)
                             and call.input.numel() == mid.numel()  # OPT reads (B·T, d)
                             and _close(call.input.reshape(mid.shape), mid, tolerance)
                             for call in calls.values())
            split = _heads(model, modules[attention.path], attention.output, calls, tolerance)
        heads_missing |= split is None
        parts.append(BlockParts(tuple(Part(modules[call.path], call.path, name)
                                      for call, name in zip(found, names)), sequential, split))
    norm = _norm_map(head, ends[-1][1], tolerance)
    note = None
    uneven = _uneven(parts)
    if uneven is not None:
        note = (f"heads are split only where every block adds an attention then an MLP (block "
                f"{uneven[0]} adds {uneven[1]} part{'s' if uneven[1] > 1 else ''})")
    elif heads_missing:
        note = ("the attention's output is not an output projection over the concatenated "
                "heads added to the stream as it is (e.g. a norm after the attention, as "
                "Gemma-2/3's post-attention norm), so it is not split by head")
    return Structure(tuple(parts), tuple(blocks), norm, note,
                     None if input_norm is None else input_norm[0],
                     head.norms[0] if head.norms else None)
