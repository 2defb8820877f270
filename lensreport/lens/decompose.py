"""Direct logit attribution: what the embeddings, each block's parts (attention and MLP, a
state-space mixer, ...), each head and the constant terms wrote toward a token's final logit.

A component ``c`` (its vector at position t) is read through the final norm's *linear* map
at the full stream's scale (RMSNorm ``c · s · w``, LayerNorm ``(c − mean c) · s · γ``, ``s``
from the whole residual stream at t: TransformerLens's cached-scale convention), dotted with
the token's unembedding row, times any linear logit scale, before any softcap. ``bias``
holds the constant terms (the norm's bias through the unembedding, the unembedding's bias),
so the components sum to the model's pre-softcap logit. The blocks' parts come from
models/blocks.py (proven on a probe); each run checks again that they reproduce every
block's residual update and the norm's output, else there is no decomposition.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import LensReportError
from ..models.blocks import Structure
from ..models.heads import LensHead, _close, _first_tensor
from ..models.states import stream_argument

# Positions per chunk of the per-head computation (bounds its (T, tokens, d) buffers).
HEAD_CHUNK = 256
# Decimals kept (logits units): components sum to the logit to ~1e-5 per part; heads, most
# of a document's attribution numbers, to 1e-4 each.
DIGITS = 5
HEAD_DIGITS = 4


@dataclass
class CapturedParts:
    """One sequence's block parts from its forward pass: (T, d) per block and part, the
    heads' input to the output projection (T, heads · d_head) per block, each block's
    output."""

    blocks: list[list[torch.Tensor]]
    heads_input: list[torch.Tensor] | None
    outputs: list[torch.Tensor]  # each block's output (the next block may read it rescaled)
    embed: torch.Tensor | None = None  # the output of the structure's input_norm, if any
    normed: torch.Tensor | None = None  # the final norm's input, where there is a final norm

    @property
    def final(self) -> torch.Tensor:
        return self.outputs[-1]

    def before(self, block: int, hidden: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The stream block ``block`` (0-based) adds to: its input, or for block 0 of a
        structure with an input norm, that norm's output."""
        return self.embed if block == 0 and self.embed is not None else hidden[block]


class StreamStates(tuple):
    """A sequence's hidden states (a tuple, as Hugging Face returns them) with the block
    parts captured in the same pass, or None."""

    parts: CapturedParts | None = None


@contextmanager
def capture(structure: Structure) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Hooks that keep, during one batched forward pass, each block's parts' outputs (under
    "<block>.<part>"), the heads' inputs to the output projections and each block's output
    ("out.<block>"; cloned: some families add into a sub-layer's output in place
    afterwards)."""
    kept: dict[str, list[torch.Tensor]] = {"heads": []}
    handles = []

    def keep(name: str) -> Any:
        kept[name] = []

        def hook(_module: torch.nn.Module, _args: tuple, output: Any) -> None:
            value = _first_tensor(output)
            if value is not None:
                kept[name].append(value.detach().clone())
        return hook

    def keep_input(_module: torch.nn.Module, args: tuple) -> None:
        kept["heads"].append(args[0].detach().clone())

    for b, block in enumerate(structure.blocks):
        for i, part in enumerate(block.parts):
            handles.append(part.module.register_forward_hook(keep(f"{b}.{i}")))
        if structure.heads_note is None and block.heads is not None:
            handles.append(block.heads.projection.register_forward_pre_hook(keep_input))
    for b, module in enumerate(structure.modules):
        handles.append(module.register_forward_hook(keep(f"out.{b}")))
    if structure.input_norm is not None:
        handles.append(structure.input_norm.register_forward_hook(keep("embed")))
    if structure.final_norm is not None:
        kept["normed"] = []

        def keep_normed(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            value = stream_argument(args, kwargs)
            if value is not None:
                kept["normed"].append(value.detach().clone())
        handles.append(structure.final_norm.register_forward_pre_hook(keep_normed,
                                                                      with_kwargs=True))
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()


def row_parts(structure: Structure, kept: dict[str, list[torch.Tensor]], row: int,
              length: int) -> CapturedParts | None:
    """One sequence of a captured batch (None where the pass did not run every hook once).
    A part's output flattened over the batch (Llama-4's MoE: (B·T, d)) is read as (B, T, d)."""
    outputs = [kept[f"out.{b}"] for b in range(len(structure.blocks))]
    if any(len(output) != 1 for output in outputs):
        return None
    shape = outputs[-1][0].shape

    def one(value: torch.Tensor) -> torch.Tensor:
        """This sequence's (T, d) of a batch's (B, T, d) (or (B·T, d)) tensor."""
        return value.reshape(shape)[row, :length]

    blocks: list[list[torch.Tensor]] = []
    for b, block in enumerate(structure.blocks):
        values = [kept[f"{b}.{i}"] for i in range(len(block.parts))]
        if any(len(value) != 1 or value[0].shape.numel() != shape.numel() for value in values):
            return None
        blocks.append([one(value[0]) for value in values])
    heads = [h[row, :length] for h in kept["heads"]] if len(kept["heads"]) == len(blocks) \
        else None
    embed = None
    if structure.input_norm is not None:
        if len(kept["embed"]) != 1:
            return None
        embed = one(kept["embed"][0])
    # The final norm's last call is the head's (a weightless norm module may also serve
    # inside the blocks, as nanochat's).
    normed = next((one(value) for value in kept.get("normed", [])[-1:]
                   if value.shape.numel() == shape.numel()), None)
    return CapturedParts(blocks, heads, [one(output[0]) for output in outputs], embed, normed)


def attributed_tokens(stats: Any, input_ids: list[int], target_id: int | None
                      ) -> list[list[int]]:
    """Per position: the final row's top-k, the next input token, the target, and each
    group's most likely member at the last row (each once, in that order)."""
    out = []
    last = len(input_ids) - 1
    for t in range(len(input_ids)):
        ids = [int(i) for i in stats.topk_ids[-1, t]]
        if t < last:
            ids.append(input_ids[t + 1])
        if target_id is not None:
            ids.append(target_id)
        ids += [int(group.top_ids[-1, t, 0]) for group in stats.groups]
        out.append(list(dict.fromkeys(ids)))
    return out


def _rounded(array: np.ndarray, counts: list[int], digits: int = DIGITS) -> list[list[float]]:
    """(T, J) padded values -> per position its first ``counts[t]`` values, rounded."""
    return [row[:n] for row, n in zip(np.round(array, digits).tolist(), counts)]


def decompose(structure: Structure, head: LensHead, hidden: tuple[torch.Tensor, ...],
              last_hidden: torch.Tensor, parts: CapturedParts, token_ids: list[list[int]],
              tolerance: float) -> dict[str, Any]:
    """The ``decomposition`` field of a document (README, "Direct logit attribution").

    Raises LensReportError (one line) where the captured parts do not reproduce a block's
    residual update or the final norm's output on this sequence.
    """
    device = head.weight.device
    blocks = len(structure.blocks)
    # carried[b]: the constants the model multiplies the stream by after block b (between
    # blocks, before the final norm), multiplied: they scale block b's parts (and for b = 0
    # the embeddings) on their way to the final norm.
    carried = [1.0] * blocks
    for b in range(blocks):
        before = parts.before(b, hidden).to(device)
        after = parts.outputs[b].to(device)
        # Rebuilt from the stream before the block (float64), to the stream's float
        # rounding: the update alone is small beside a stream with large activations.
        rebuilt = before.double() + sum(part.to(device).double() for part in parts.blocks[b])
        if not _close(rebuilt, after, tolerance):
            difference = float((rebuilt - after.double()).abs().max())
            names = " + ".join(part.name for part in structure.blocks[b].parts)
            raise LensReportError(f"block {b + 1}'s {names} differ from its residual update by "
                                  f"{difference:.3g} on this prompt")
        if b < blocks - 1:
            factor = _rescaling(after, hidden[b + 1].to(device), tolerance, b + 1)
            carried[:b + 1] = [value * factor for value in carried[:b + 1]]
    final = parts.final.to(device)
    if parts.normed is not None:  # the final norm may read the last block's output rescaled
        factor = _rescaling(final, parts.normed.to(device), tolerance, blocks)
        carried = [value * factor for value in carried]
        final = parts.normed.to(device)
    norm = structure.norm
    scale = norm.scale(final)  # (T,) float64: the full stream's scale
    # A constant after the norm (Inkling's muP input scale) is part of the norm's map.
    after_norm = head.input_scale
    if not _close(norm.apply(final, scale) * after_norm, last_hidden.to(device).double(),
                  tolerance):
        raise LensReportError("the final norm's map does not reproduce its output on this "
                              "prompt")
    counts = [len(ids) for ids in token_ids]
    width = max(counts)
    padded = torch.tensor([ids + ids[:1] * (width - len(ids)) for ids in token_ids],
                          device=device)
    rows = head.weight[padded].double()  # (T, J, d) unembedding rows
    factor = head.logit_scale * after_norm
    if norm.weight is None:
        directions = rows * factor
    else:
        directions = rows * norm.weight.double().to(device)
        if norm.centers:
            directions = directions - directions.mean(-1, keepdim=True)
        directions = directions * (scale[:, None, None] * factor)  # (T, J, d)

    def attr(component: torch.Tensor) -> np.ndarray:
        return torch.einsum("td,tjd->tj", component.to(device).double(),
                            directions).cpu().numpy()

    constant = torch.zeros(padded.shape, dtype=torch.float64, device=device)
    if norm.bias is not None:
        constant += torch.einsum("tjd,d->tj", rows, norm.bias.double().to(device)) * factor
    if head.bias is not None:
        constant += head.bias[padded].double() * head.logit_scale
    components, attrs = ["embed"], [attr(parts.before(0, hidden)) * carried[0]]
    for b, block in enumerate(structure.blocks):
        components += [f"{part.name}.{b + 1}" for part in block.parts]
        attrs += [attr(value) * carried[b] for value in parts.blocks[b]]
    components.append("bias")
    attrs.append(constant.cpu().numpy())
    heads = None
    if structure.heads_note is None and parts.heads_input is not None:
        heads = _heads(structure, parts, directions, counts, carried)
    return {"token_ids": token_ids, "components": components,
            "attrs": [_rounded(a, counts) for a in attrs], "heads": heads}


def _rescaling(output: torch.Tensor, read: torch.Tensor, tolerance: float, block: int
               ) -> float:
    """The constant the model multiplies block ``block``'s output by before the next block
    (or the final norm) reads it: 1 almost always, 1/2 every few blocks for RWKV at
    inference."""
    if torch.equal(output, read):
        return 1.0
    output, read = output.double(), read.double()
    factor = float((output * read).sum() / output.pow(2).sum().clamp_min(1e-300))
    if not _close(output * factor, read, tolerance):
        raise LensReportError(f"what reads block {block}'s output reads it changed by more "
                              "than a constant")
    return factor


def _heads(structure: Structure, parts: CapturedParts, directions: torch.Tensor,
           counts: list[int], carried: list[float]) -> dict[str, Any]:
    """Per block, head and position: each head's slice of the output projection's input
    through its columns of W_O, read like a component; ``bias`` is W_O's bias."""
    device = directions.device
    per_block, biases = [], []
    for part, z, factor in zip(structure.blocks, parts.heads_input or [], carried):
        split = part.heads
        assert split is not None  # heads_note is None: every block splits
        weight = split.weight().detach().to(device).double()  # (d, H·dh)
        z = z.to(device).double()
        length = z.shape[0]
        values = np.empty((split.heads, length, directions.shape[1]))
        per_head = weight.view(weight.shape[0], split.heads, -1)  # (d, H, dh)
        for start in range(0, length, HEAD_CHUNK):
            stop = start + HEAD_CHUNK
            chunk = z[start:stop].view(z[start:stop].shape[0], split.heads, -1)
            written = torch.einsum("thk,dhk->thd", chunk, per_head)  # each head's vector
            values[:, start:stop] = torch.einsum("thd,tjd->htj", written,
                                                 directions[start:stop]).cpu().numpy() * factor
        per_block.append([_rounded(values[h], counts, HEAD_DIGITS)
                          for h in range(split.heads)])
        bias = split.bias()
        biases.append(None if bias is None else _rounded(torch.einsum(
            "d,tjd->tj", bias.detach().to(device).double(), directions).cpu().numpy() * factor,
            counts, HEAD_DIGITS))
    if all(b is None for b in biases):
        return {"attrs": per_block, "bias": None}
    zeros = [[0.0] * n for n in counts]
    return {"attrs": per_block, "bias": [zeros if b is None else b for b in biases]}
