"""The tiled pass: a lens's inputs -> per-(row, position) statistics, in one streamed pass.

Every lens kind goes through this one pass (a kind only decides what the unembedding reads).

The unembedding is applied tile by tile: a vocabulary block (outer loop, so each block of
the unembedding matrix is read from memory once) times a few positions with all their layers
(inner loop, so a tile of logits stays in the CPU cache). Each tile updates running
per-(layer, position) statistics, as online softmax does: the running maximum ``m``, the sum
``s`` of exp(z - m), the sum ``t`` of exp(z - m)·(z - m) (entropy), the sum ``u`` of
exp(z_final - m_final)·(z_final - z) (KL to the final layer), top-k candidates and rank
counts. No cell's full vocabulary of logits, let alone a layer of them, is ever held, so
memory is bounded by a tile and the statistics cost a few in-cache passes next to the matmul. Everything is
float32 with cascade sums (a BLAS dot product here loses ~1e-3 nats).

Conventions: row 0 is the embedding output, row i the output of block i, row L the model's
own logits. Ranks are 1-based and count the tokens with a strictly higher probability, so
tied tokens share the better rank.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from ..errors import LensReportError
from ..models.heads import LensHead

if TYPE_CHECKING:
    from .kinds import Lens

# About 1 MB of float32 logits per tile on CPU (fits the cache); GPUs like bigger tiles.
CPU_TILE_ELEMENTS = 256 * 1024
GPU_TILE_ELEMENTS = 64 * 1024 * 1024
TILE_ROWS = 128
# Logits closer than this (relative, at least 1) count as tied for ranks: float32 matmuls
# round one logit differently by its column position, by a few units in the last place.
TIE_MARGIN = 2.0 ** -16
# A token group's members shown per cell (hover), and cells per member-logit block.
GROUP_MEMBERS = 3
GROUP_CELLS = 8192


@dataclass
class LensStats:
    """Arrays are indexed [layer, position, ...]; layer 0 = embeddings, L = final output."""

    topk_ids: np.ndarray  # (layers, T, k) int64
    topk_probs: np.ndarray  # (layers, T, k) float32
    entropy: np.ndarray  # (layers, T) nats
    kl_to_final: np.ndarray  # (layers, T) nats, KL(final || layer)
    next_token_prob: np.ndarray  # (layers, T); last position NaN (no next input token)
    next_token_rank: np.ndarray  # (layers, T) int64; last position 0
    target_prob: np.ndarray | None  # (layers, T)
    target_rank: np.ndarray | None  # (layers, T)
    tracked_ids: list[np.ndarray]  # per position: ids in that position's top-k at any layer
    tracked_probs: list[np.ndarray]  # per position: (layers, n) probability of each tracked id
    groups: list["GroupStats"] = field(default_factory=list)  # one per token group


@dataclass
class GroupStats:
    """A token group's numbers per [layer, position]: the summed probability of its tokens,
    the best rank among them, and its most likely members (ids and probabilities)."""

    prob: np.ndarray  # (layers, T) float32
    rank: np.ndarray  # (layers, T) int64
    top_ids: np.ndarray  # (layers, T, m) int64, m = min(GROUP_MEMBERS, group size)
    top_probs: np.ndarray  # (layers, T, m) float32


def row_depths(num_layers: int, sublayer: bool) -> list[float]:
    """Every row's depth, in order: 0 = embeddings, b − 0.5 = after block b's attention
    (sub-layer rows only), b = block b's output."""
    depths = [0.0]
    for block in range(1, num_layers + 1):
        depths += [block - 0.5, float(block)] if sublayer else [float(block)]
    return depths


def covered_depths(lens: "Lens", num_layers: int, sublayer: bool) -> list[float]:
    """The depths of the rows ``lens`` (bound) reads: its block rows, and every mid row
    where it reads them."""
    rows = set(lens.rows(num_layers))
    return [depth for depth in row_depths(num_layers, sublayer)
            if (int(depth) in rows if depth.is_integer() else lens.reads_mid_rows)]


def lens_inputs(hidden_states: tuple[torch.Tensor, ...], last_hidden: torch.Tensor,
                head: LensHead, lens: "Lens", depths: list[float] | None = None,
                mid: list[torch.Tensor] | None = None) -> torch.Tensor:
    """What the unembedding reads at each row the lens covers: (rows, T, d).

    Rows i < L are ``final_norm(lens.translate(i, h_i))`` (no norm for a lens that does not
    normalize); row L is the backbone's last hidden state, which the model's own head reads
    (already normalised, so never normalised twice). ``lens`` is bound to the model.
    ``depths`` (default: the lens's block rows) may hold mid rows b − 0.5, read from
    ``mid[b − 1]`` (the stream after block b's attention) through the final norm.
    """
    rows = []
    device = head.weight.device  # a sharded model's layers may live on other devices
    last = len(hidden_states) - 1
    if depths is None:
        depths = [float(row) for row in lens.rows(last)]
    with torch.no_grad():
        blocks = iter(lens.translate_rows([int(d) for d in depths[:-1] if d.is_integer()],
                                          hidden_states))
        for depth in depths[:-1]:
            if depth.is_integer():
                hidden = next(blocks)
            else:
                assert mid is not None, "mid rows need the states after each attention"
                hidden = mid[int(depth)]
            row = head.normalize(hidden) if lens.normalizes else hidden
            rows.append(row.to(device))
        rows.append(last_hidden.to(device))
    return torch.stack(rows)


def tile_shape(layers: int, vocab: int, device: torch.device) -> tuple[int, int]:
    """(positions, vocabulary entries) per tile, from the problem and the device.

    $LENSREPORT_TILE_ELEMENTS overrides the number of logits per tile.
    """
    elements = int(os.environ.get("LENSREPORT_TILE_ELEMENTS") or 0) or (
        GPU_TILE_ELEMENTS if device.type == "cuda" else CPU_TILE_ELEMENTS)
    positions = max(1, TILE_ROWS // layers)
    block = max(256, elements // (positions * layers))
    return positions, min(vocab, block)


class _TokenRank:
    """Probability and rank of one chosen token per cell (the next input token, the target).

    ``threshold`` is the token's logit from a dot product, known before the first tile, so
    each tile counts the tokens above it; ``own`` is the token's logit as its tile computes
    it. Float32 matmuls round the same logit differently by its column position (and a dot
    product differs from a tile in the last bits), so "above" means above by more than
    ``margin``: a few units of the logits' precision (TIE_MARGIN relative in float32, one
    unit of the model's dtype in bf16/fp16). Tokens within it are tied and share the better
    rank, on every CPU and tile shape.
    """

    def __init__(self, cells: torch.Tensor, head: LensHead, token_ids: torch.Tensor,
                 ranked: bool = True) -> None:
        self.token_ids = token_ids
        self.ranked = ranked
        if ranked:
            self.threshold = _token_logits(cells, head, token_ids)
            precision = max(TIE_MARGIN, torch.finfo(head.weight.dtype).eps)
            self.margin = precision * self.threshold.abs().clamp_min(1.0)
        self.above = torch.zeros(len(token_ids), dtype=torch.int64, device=cells.device)
        self.own = torch.zeros(len(token_ids), device=cells.device)

    def update(self, span: slice, logits: torch.Tensor, offset: int) -> None:
        if self.ranked:
            bound = self.threshold[span] + self.margin[span]
            self.above[span] += (logits > bound[:, None]).sum(-1)
        token_ids = self.token_ids[span]
        inside = (token_ids >= offset) & (token_ids < offset + logits.shape[1])
        if bool(inside.any()):
            columns = (token_ids - offset).clamp(0, logits.shape[1] - 1)
            found = logits.gather(1, columns[:, None])[:, 0]
            self.own[span] = torch.where(inside, found, self.own[span])

    def probability(self, lse: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.own - lse)

    def rank(self) -> torch.Tensor:
        return self.above + 1


class _Running:
    """Online statistics for a set of cells (one cell = one row of the lens at one position)."""

    def __init__(self, cells: int, top_k: int, device: torch.device) -> None:
        self.max = torch.full((cells,), float("-inf"), device=device)
        self.sum = torch.zeros(cells, device=device)  # Σ exp(z - max)
        self.centred = torch.zeros(cells, device=device)  # Σ exp(z - max)·(z - max)
        self.kl = torch.zeros(cells, device=device)  # Σ exp(z_f - max_f)·(z_f - z)
        self.top_values = torch.full((cells, top_k), float("-inf"), device=device)
        self.top_ids = torch.zeros((cells, top_k), dtype=torch.int64, device=device)


@dataclass
class CellStatistics:
    """Per-cell results of the streamed pass; cell (position t, row l) is at t·rows + l."""

    lse: torch.Tensor  # log-sum-exp of the cell's logits
    entropy: torch.Tensor  # nats
    kl_to_final: torch.Tensor  # nats, KL(final || layer); 0 on the final layer
    top_ids: torch.Tensor  # (cells, k)
    top_values: torch.Tensor  # (cells, k) logits
    next_token: "_TokenRank"
    target: "_TokenRank | None"
    groups: list["GroupCells"]


@dataclass
class GroupCells:
    """A token group per cell (flat, like every CellStatistics field): summed probability,
    best rank among its tokens (None when ranks were skipped), top members."""

    prob: torch.Tensor  # (cells,)
    rank: torch.Tensor | None  # (cells,)
    top_ids: torch.Tensor  # (cells, m)
    top_probs: torch.Tensor  # (cells, m)


def _tile(cells: torch.Tensor, head: LensHead, start: int, stop: int) -> torch.Tensor:
    """One tile of float32 logits: the only place the lens multiplies by the unembedding."""
    weight = head.weight[start:stop]
    bias = None if head.bias is None else head.bias[start:stop]
    return head.postprocess(torch.nn.functional.linear(cells, weight, bias)).float()


@contextmanager
def _exact_reductions() -> Iterator[None]:
    """Full-precision matmuls while the lens runs (no TF32, no reduced-precision reductions
    in half precision), so its numbers and tie margins do not depend on global settings."""
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_bf16_reduced_precision_reduction,
             matmul.allow_fp16_reduced_precision_reduction, matmul.allow_tf32,
             torch.get_float32_matmul_precision())
    matmul.allow_bf16_reduced_precision_reduction = False
    matmul.allow_fp16_reduced_precision_reduction = False
    matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        (matmul.allow_bf16_reduced_precision_reduction,
         matmul.allow_fp16_reduced_precision_reduction, matmul.allow_tf32) = saved[:3]
        torch.set_float32_matmul_precision(saved[3])


def stream(inputs: torch.Tensor, head: LensHead, next_ids: torch.Tensor, top_k: int,
           target_id: int | None = None, chunk: int | None = None, block: int | None = None,
           ranks: bool = True, groups: list[torch.Tensor] = ()) -> CellStatistics:
    """The tiled pass over ``inputs`` (rows, T, d): every statistic, per cell, in float32.

    ``next_ids`` (T) are the tokens scored as "the next token" (the last is a placeholder
    where there is none); ``ranks=False`` skips the exact rank counts (curves need only the
    tokens' probabilities). ``groups`` are token groups (ids each): their ranks are those of
    each cell's most likely member, counted in the same tiles as the other ranks. Raises
    LensReportError naming the row if logits are not finite.
    """
    layers, length, width = inputs.shape
    device = inputs.device
    vocab = head.weight.shape[0]
    top_k = min(top_k, vocab)
    auto_chunk, auto_block = tile_shape(layers, vocab, device)
    chunk, block = chunk or auto_chunk, block or auto_block
    # Positions-major cells: cell (t, l) = row l at position t, so a chunk of positions is a
    # contiguous run of cells with every row (the final row included, for KL).
    cells = inputs.transpose(0, 1).reshape(length * layers, width)
    cell_next = next_ids.to(device).repeat_interleave(layers)
    state = _Running(length * layers, top_k, device)
    spans = [slice(first * layers, min(length, first + chunk) * layers)
             for first in range(0, length, chunk)]
    token_sets = [cell_next] + ([] if target_id is None else
                                [torch.full_like(cell_next, target_id)])
    with torch.no_grad(), _exact_reductions():
        if ranks:  # each group's rank is that of its most likely member, cell by cell
            token_sets += [_best_members(cells, head, ids) for ids in groups]
        trackers = [_TokenRank(cells, head, ids, ranks) for ids in token_sets]
        for start in range(0, vocab, block):
            stop = min(vocab, start + block)
            for span in spans:
                logits = _tile(cells[span], head, start, stop)
                for tracker in trackers:
                    tracker.update(span, logits, start)
                _update(state, span, logits, start, layers)
    next_token = trackers[0]
    target = trackers[1] if target_id is not None else None
    group_ranks = trackers[len(trackers) - len(groups):] if ranks and groups else \
        [None] * len(groups)
    lse = state.max + torch.log(state.sum)
    entropy = (torch.log(state.sum) - state.centred / state.sum).clamp_min(0)
    final_lse = lse.view(length, layers)[:, -1:]
    final_sum = state.sum.view(length, layers)[:, -1:]
    kl = (state.kl.view(length, layers) / final_sum + lse.view(length, layers) - final_lse)
    kl = kl.clamp_min(0)
    kl[:, -1] = 0.0  # exactly zero for the final layer itself
    finite = torch.isfinite(lse) & torch.isfinite(entropy)
    if not bool(finite.all()):
        layer = int((~finite).view(length, layers).any(0).nonzero()[0, 0])
        raise LensReportError(f"layer {layer}: the logits are not finite (NaN or infinity: "
                              "float16 overflow or broken weights?); try dtype: float32")
    with torch.no_grad(), _exact_reductions():
        group_cells = [_group_cells(cells, head, ids, lse, tracker)
                       for ids, tracker in zip(groups, group_ranks)]
    return CellStatistics(lse, entropy, kl.reshape(-1), state.top_ids, state.top_values,
                          next_token, target, group_cells)


def _member_logits(cells: torch.Tensor, head: LensHead, ids: torch.Tensor) -> torch.Tensor:
    """Float32 logits of a group's tokens only (cells × group), from their unembedding rows."""
    bias = None if head.bias is None else head.bias[ids]
    return head.postprocess(torch.nn.functional.linear(cells, head.weight[ids], bias)).float()


def _best_members(cells: torch.Tensor, head: LensHead, ids: torch.Tensor) -> torch.Tensor:
    """Per cell, the group's most likely token (whose rank is the group's best rank)."""
    best = torch.empty(len(cells), dtype=torch.int64, device=cells.device)
    for start in range(0, len(cells), GROUP_CELLS):
        logits = _member_logits(cells[start:start + GROUP_CELLS], head, ids)
        best[start:start + GROUP_CELLS] = ids[logits.argmax(-1)]
    return best


def _group_cells(cells: torch.Tensor, head: LensHead, ids: torch.Tensor, lse: torch.Tensor,
                 tracker: "_TokenRank | None") -> GroupCells:
    """A group's summed probability and top members per cell, blockwise (a group of many
    tokens never holds more than a block of cells × group logits)."""
    members = min(GROUP_MEMBERS, len(ids))
    prob = torch.empty(len(cells), device=cells.device)
    top_ids = torch.empty((len(cells), members), dtype=torch.int64, device=cells.device)
    top_probs = torch.empty((len(cells), members), device=cells.device)
    for start in range(0, len(cells), GROUP_CELLS):
        stop = start + GROUP_CELLS
        probs = torch.exp(_member_logits(cells[start:stop], head, ids) - lse[start:stop, None])
        prob[start:stop] = probs.sum(-1)
        values, order = torch.topk(probs, members, -1)
        top_probs[start:stop], top_ids[start:stop] = values, ids[order]
    return GroupCells(prob, None if tracker is None else tracker.rank(), top_ids, top_probs)


def next_token_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """The token each position is scored against; the last position has none and gets a
    placeholder (its own token) that callers mask or leave unscored."""
    return torch.cat([input_ids[1:], input_ids[-1:]])


def lens_statistics(inputs: torch.Tensor, head: LensHead, input_ids: torch.Tensor, top_k: int,
                    target_id: int | None = None, chunk: int | None = None,
                    block: int | None = None, groups: list[torch.Tensor] = ()) -> LensStats:
    """Statistics for one sequence. ``inputs`` is (cells, T, d) from :func:`lens_inputs`;
    ``groups`` are token groups (ids each, on the unembedding's device).

    ``chunk`` (positions) and ``block`` (vocabulary entries) override the tile shape.
    """
    layers, length, _ = inputs.shape
    cells = stream(inputs, head, next_token_ids(input_ids), top_k, target_id, chunk, block,
                   groups=groups)
    return _finish(cells, inputs, head, layers, length)


def _token_logits(cells: torch.Tensor, head: LensHead, token_ids: torch.Tensor
                  ) -> torch.Tensor:
    """Logit of one given token per cell (for ranks: how many tokens score higher).

    Accumulated in float32 and rounded to the model's dtype, as the tiles' matmul is.
    """
    with torch.no_grad():
        weight = head.weight[token_ids]
        logits = (cells.float() * weight.float()).sum(-1, keepdim=True)
        if head.bias is not None:
            logits = logits + head.bias[token_ids][:, None].float()
        return head.postprocess(logits.to(cells.dtype)).float()[:, 0]


def _update(state: _Running, span: slice, logits: torch.Tensor, offset: int, layers: int
            ) -> None:
    """Fold one tile of float32 logits (cells × block) into the running statistics."""
    tile_max = logits.amax(-1)
    # Top-k: only cells where this tile beats the current k-th best (few, after a while).
    top_values, top_ids = state.top_values[span], state.top_ids[span]
    improving = (tile_max > top_values[:, -1]).nonzero()[:, 0]
    if improving.numel():
        k = top_values.shape[1]
        values, indices = torch.topk(logits[improving], min(k, logits.shape[1]), -1)
        merged_values = torch.cat([top_values[improving], values], -1)
        merged_ids = torch.cat([top_ids[improving], indices + offset], -1)
        best, order = torch.topk(merged_values, k, -1)
        top_values[improving] = best
        top_ids[improving] = merged_ids.gather(1, order)

    old_max = state.max[span]
    new_max = torch.maximum(old_max, tile_max)
    # exp(-inf - finite) = 0 on the first tile; nan_to_num covers (-inf) - (-inf) there too.
    rescale = torch.exp(old_max - new_max)
    shift = torch.nan_to_num(old_max - new_max, neginf=0.0)
    logits.sub_(new_max[:, None])  # now z - max (≤ 0)
    exps = torch.exp(logits)
    old_sum = state.sum[span].clone()  # a view would see the update below
    state.sum[span] = old_sum * rescale + exps.sum(-1)
    state.centred[span] = rescale * (state.centred[span] + old_sum * shift) + \
        (exps * logits).sum(-1)
    state.max[span] = new_max

    # KL(final || layer): Σ p_f (z_f - z) with the final layer's weights exp(z_f - max_f).
    grid = logits.view(-1, layers, logits.shape[1])
    final = grid[:, -1:]
    final_exps = exps.view_as(grid)[:, -1:]
    maxima = new_max.view(-1, layers)
    difference = (final - grid).mul_(final_exps).sum(-1)  # Σ e_f·((z_f-m_f) - (z-m))
    difference += (maxima[:, -1:] - maxima) * final_exps.sum(-1)  # + (m_f - m)·Σ e_f
    final_rescale = rescale.view(-1, layers)[:, -1:]
    kl = state.kl[span].view(-1, layers)
    state.kl[span] = (kl * final_rescale + difference).reshape(-1)


def _finish(cells: CellStatistics, inputs: torch.Tensor, head: LensHead, layers: int,
            length: int) -> LensStats:
    def grid(values: torch.Tensor) -> torch.Tensor:
        """Rows (t, l) -> [layer, position, ...] on the CPU."""
        return values.reshape(length, layers, *values.shape[1:]).transpose(0, 1).cpu()

    lse = cells.lse
    top_probs = torch.exp(cells.top_values - lse[:, None])
    next_prob = grid(cells.next_token.probability(lse))
    next_rank = grid(cells.next_token.rank())
    next_prob[:, -1] = float("nan")
    next_rank[:, -1] = 0
    target_prob = target_rank = None
    if cells.target is not None:
        target_prob = grid(cells.target.probability(lse)).numpy()
        target_rank = grid(cells.target.rank()).numpy()
    topk_ids = grid(cells.top_ids)
    tracked_ids, tracked_probs = _tracked(inputs, head, topk_ids, grid(lse))
    return LensStats(
        topk_ids=topk_ids.numpy(), topk_probs=grid(top_probs).numpy(),
        entropy=grid(cells.entropy).numpy(), kl_to_final=grid(cells.kl_to_final).numpy(),
        next_token_prob=next_prob.numpy(), next_token_rank=next_rank.numpy(),
        target_prob=target_prob, target_rank=target_rank,
        tracked_ids=tracked_ids, tracked_probs=tracked_probs,
        groups=[GroupStats(grid(g.prob).numpy(), grid(g.rank).numpy(), grid(g.top_ids).numpy(),
                           grid(g.top_probs).numpy()) for g in cells.groups])


def _tracked(inputs: torch.Tensor, head: LensHead, topk_ids: torch.Tensor, lse: torch.Tensor
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Probability at every layer of each token in a position's top-k at any layer.

    Recomputed from the few unembedding rows involved and each layer's log-sum-exp, so no
    full logits are kept.
    """
    weight, bias = head.weight, head.bias
    ids_per_position, probs_per_position = [], []
    with torch.no_grad():
        for position in range(inputs.shape[1]):
            ids = torch.unique(topk_ids[:, position].reshape(-1))  # sorted, so output is stable
            rows = weight[ids.to(weight.device)]
            logits = inputs[:, position] @ rows.T
            if bias is not None:
                logits = logits + bias[ids.to(bias.device)]
            logits = head.postprocess(logits).float().cpu()
            ids_per_position.append(ids.numpy())
            probs_per_position.append(torch.exp(logits - lse[:, position, None]).numpy())
    return ids_per_position, probs_per_position
