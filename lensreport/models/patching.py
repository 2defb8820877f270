"""Run a target prompt with the residual stream at one position replaced (activation patching).

The patchscope lens reads a source state with the model's own upper blocks: the state is
written into a target prompt at row ``l`` (the input of block ``l + 1``; row 0 = the
embeddings' output) and the model runs on from there. Many such cells share one target
prompt, so its prefix (every token before the target position) is run once, its key/value
cache kept, and each cell costs one token through the model. Cells of different rows run in
one batch: a pre-hook on each block writes the states of the cells patched at its row.

Blocks below a cell's row still run on the target token (their output is then replaced):
skipping them would need each family's block call signature; it costs at most twice the
blocks above.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from torch import nn

from ..errors import LensReportError, first_line
from .heads import LensHead, Reached, decoder_blocks
from .states import stream_argument

# Tokens per forward pass (a cell's prefix cache counts: the cached path runs one token per
# cell but keeps the prefix's keys and values per cell).
CELL_TOKENS = 4096


class PatchRunner:
    """One target prompt, ready to be patched at ``position`` (an index into ``target_ids``).

    Tokens after the target position cannot change a causal model's output there, so the
    prompt is cut after it. With ``prefix_cache`` (the default) the tokens before it run
    once and each batch reuses their cache; without, every cell runs the whole cut prompt
    (the reference the cached path is tested against).
    """

    def __init__(self, model: nn.Module, head: LensHead, target_ids: list[int], position: int,
                 prefix_cache: bool = True) -> None:
        if not 0 <= position < len(target_ids):
            raise LensReportError(f"target position {position} is outside the target prompt's "
                                  f"{len(target_ids)} tokens")
        self.model = model
        self.unembedding = head.unembedding
        self.device = model.get_input_embeddings().weight.device
        self.ids = torch.tensor(target_ids[:position + 1], device=self.device)
        self.blocks = decoder_blocks(model, head)
        # transformers 5.x renames the cache argument (``past_key_values`` before).
        parameters = inspect.signature(model.forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.cache: Any = None
        if prefix_cache and position > 0:
            with torch.no_grad():
                output = self._forward(self.ids[None, :-1], use_cache=True)
            # transformers 5.x names it ``cache`` (``past_key_values`` before).
            self.cache = output.get("cache") if "cache" in output else \
                output.get("past_key_values")
            if self.cache is not None and not _replicable(self.cache):
                self.cache = None  # a cache this runner cannot replicate: run whole prompts

    @property
    def prefix_cached(self) -> bool:
        """Whether cells run one token each on the prefix's cache."""
        return self.cache is not None

    def _forward(self, ids: torch.Tensor, **kwargs: Any) -> Any:
        try:
            return self.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        except (RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
            name = getattr(self.model.config, "model_type", type(self.model).__name__)
            raise LensReportError(f"{name}: running the target prompt failed "
                                  f"({type(exc).__name__}: {first_line(exc, 200)})") from exc

    def outputs(self, rows: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """What the unembedding reads at the target position (after the final norm), for
        each cell: ``states[i]`` written at row ``rows[i]`` (0 … L-1). (n,) and (n, d) in,
        (n, d) out; cells run in batches of about CELL_TOKENS tokens."""
        per_cell = len(self.ids)
        size = max(1, CELL_TOKENS // per_cell)
        parts = [self._batch(rows[start:start + size], states[start:start + size])
                 for start in range(0, len(rows), size)]
        return torch.cat(parts) if parts else states.new_zeros((0, states.shape[-1]))

    def _batch(self, rows: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        count = len(rows)
        read: list[torch.Tensor] = []

        def head_input(_module: nn.Module, args: tuple) -> None:
            read.append(args[0][:, -1])
            raise Reached  # the logits are the head's to compute

        handles = [self.unembedding.register_forward_pre_hook(head_input)]
        for row in sorted({int(r) for r in rows.tolist()}):
            cells = (rows == row).nonzero()[:, 0]
            handles.append(self.blocks[row].register_forward_pre_hook(
                _writer(cells, states[cells]), with_kwargs=True))
        try:
            with torch.no_grad():
                if self.cache is not None:
                    cache = copy.deepcopy(self.cache)
                    cache.batch_repeat_interleave(count)
                    ids = self.ids[-1:].expand(count, 1)
                    mask = torch.ones((count, len(self.ids)), dtype=torch.long,
                                      device=self.device)
                    self.model(input_ids=ids, attention_mask=mask, use_cache=True,
                               **{self.cache_argument: cache})
                else:
                    self._forward(self.ids.expand(count, -1), use_cache=False)
        except Reached:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if not read:
            raise LensReportError("running the target prompt did not reach the unembedding")
        return read[0]


def _replicable(cache: Any) -> bool:
    """Whether a copy of ``cache`` repeats per cell (state-space layers' caches do not)."""
    try:
        copy.deepcopy(cache).batch_repeat_interleave(2)
    except (AttributeError, NotImplementedError, TypeError, RuntimeError):
        return False
    return True


def _writer(cells: torch.Tensor, states: torch.Tensor):
    """A block pre-hook that writes ``states`` into the last position of batch rows
    ``cells`` of the block's input (positional or ``hidden_states=``)."""

    def write(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        original = stream_argument(args, kwargs)
        hidden = original.clone()
        hidden[cells.to(hidden.device), -1] = states.to(hidden.device, hidden.dtype)
        if args and args[0] is original:
            return (hidden, *args[1:]), kwargs
        key = next(k for k, v in kwargs.items() if v is original)
        return args, {**kwargs, key: hidden}

    return write
