"""The rows a lens reads, taken from the model's own forward pass with hooks on its blocks.

Row i < L is the state decoder block i reads (row 0: the embeddings as block 0 receives them,
scaled where the family scales them), so row i is the stream after i blocks; row L is what
the unembedding reads, so the lens's last row is the model's own output. The hidden states a
family returns with ``output_hidden_states`` are not used: their convention differs by family
(most give the embeddings and each block's input, the last entry after the final norm; Mamba,
Falcon-Mamba and RWKV give each block's output and no embeddings; xLSTM gives none; some
hybrids give more entries than blocks), and some families change the stream between blocks
(RWKV halves it every ``rescale_every`` blocks at inference), which only the block's input
shows. One rule for every family, checked once per model by :func:`stream_reader`.

The forward pass stops as soon as the unembedding is reached (its input captured), so no
logits are computed for a batch. It asks for ``output_hidden_states`` all the same: some
families (xLSTM) otherwise run a long input through the blocks chunk by chunk.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import LensReportError, first_line
from .heads import FORWARD_ERRORS, LensHead, Reached, _close, _tolerance, decoder_blocks


def stream_argument(args: tuple, kwargs: dict) -> Any:
    """The stream a block reads: its first positional tensor, or its ``hidden_states``."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in ("hidden_states", "hidden_state", "x", "inputs_embeds"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    return None


@dataclass
class ResidualStream:
    """Reads a batch's rows from the model: block inputs, the last block's output, and
    what the unembedding reads."""

    model: nn.Module
    blocks: nn.ModuleList
    unembedding: nn.Module

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 stop: bool) -> tuple[list[tuple[int, Any]], Any, torch.Tensor | None, Any]:
        """(block calls as (index, input), last block output, unembedding input, output)."""
        calls: list[tuple[int, Any]] = []
        captured: dict[str, Any] = {}
        index_of = {id(block): i for i, block in enumerate(self.blocks)}

        def block_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
            value = stream_argument(args, kwargs)
            calls.append((index_of[id(module)],
                          value.detach() if isinstance(value, torch.Tensor) else None))

        def block_output(_module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
            value = output[0] if isinstance(output, (tuple, list)) and output else output
            value = getattr(value, "last_hidden_state", value)
            captured["block_output"] = value.detach() if isinstance(value, torch.Tensor) \
                else None

        def head_input(_module: nn.Module, args: tuple) -> None:
            if "head_input" not in captured and args:
                captured["head_input"] = args[0].detach()
                if stop:
                    raise Reached

        handles = [block.register_forward_pre_hook(block_input, with_kwargs=True)
                   for block in self.blocks]
        handles.append(self.blocks[-1].register_forward_hook(block_output, with_kwargs=True))
        handles.append(self.unembedding.register_forward_pre_hook(head_input))
        output = None
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": False,
                                  "output_hidden_states": True}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        try:
            output = self.model(**kwargs)
        except Reached:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return calls, captured.get("block_output"), captured.get("head_input"), output

    def read(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
             ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(rows 0..L: block inputs then the last block's output; what the unembedding read),
        each (batch, positions, width)."""
        with torch.no_grad():
            calls, last_block, head_input, _ = self._forward(input_ids, attention_mask, True)
        rows = tuple(value for _, value in calls) + (last_block,)
        return rows, head_input


def stream_reader(model: nn.Module, head: LensHead, input_ids: torch.Tensor) -> ResidualStream:
    """The reader of a model's rows, checked on a probe: every block runs once and in order
    on the stream, row 0 has the probe's shape, and what the unembedding reads reproduces
    the model's logits through the head. Anything else is one line naming the family and
    the reason, never a figure the model does not compute."""
    name = f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')})"
    blocks = decoder_blocks(model, head)
    reader = ResidualStream(model, blocks, head.unembedding)
    try:
        with torch.no_grad():
            calls, last_block, head_input, output = reader._forward(input_ids, None, False)
    except FORWARD_ERRORS as exc:
        raise LensReportError(f"{name}: its forward pass failed on a short probe "
                              f"({type(exc).__name__}: {first_line(exc, 200)}); this family "
                              "is not supported by the lens") from exc
    order = [index for index, _ in calls]
    if order != list(range(len(blocks))):
        raise LensReportError(f"{name}: its {len(blocks)} decoder blocks do not each run once, "
                              f"in order, in a forward pass (ran {order[:12]}); the logit lens "
                              "needs one state after each block, so this family is not "
                              "supported")
    rows = [value for _, value in calls] + [last_block]
    shape = tuple(input_ids.shape)
    for index, row in enumerate(rows):
        if not isinstance(row, torch.Tensor) or row.dim() != 3 or tuple(row.shape[:2]) != shape:
            shown = tuple(row.shape) if isinstance(row, torch.Tensor) else type(row).__name__
            where = f"block {index}'s input" if index < len(blocks) else "the last block's output"
            raise LensReportError(f"{name}: {where} is {shown}, not one state per position "
                                  f"of the {shape} input; this family is not supported by "
                                  "the lens")
    logits = getattr(output, "logits", None)
    if head_input is None or not isinstance(logits, torch.Tensor):
        raise LensReportError(f"{name}: its forward pass did not run the unembedding on "
                              "the stream; this family is not supported by the lens")
    with torch.no_grad():
        own = head.logits(head_input)
    if not _close(own, logits.float().to(own.device), _tolerance(model)):
        raise LensReportError(f"{name}: what its unembedding reads does not give the model's "
                              "logits through the lens head, so the lens's last row would not "
                              "be the model's output; this family is not supported by the lens")
    return reader


@contextmanager
def block_inputs(model: nn.Module, head: LensHead) -> Iterator[dict[int, torch.Tensor]]:
    """While inside, every forward pass records what each decoder block reads, by block
    index, with its autograd graph (a Jacobian fit differentiates through it): row i of the
    lens for i < L, whatever the family's ``hidden_states`` convention."""
    blocks = decoder_blocks(model, head)
    inputs: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            value = stream_argument(args, kwargs)
            if isinstance(value, torch.Tensor):
                inputs[index] = value
        return hook

    handles = [block.register_forward_pre_hook(keep(i), with_kwargs=True)
               for i, block in enumerate(blocks)]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()
