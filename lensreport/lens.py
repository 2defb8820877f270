"""The logit lens: hidden states -> per-(layer, position) statistics, streamed.

Only one chunk of positions × vocabulary logits exists at a time (for the layer at hand and
the final layer it is compared with), so memory is bounded by the chunk, never by all
layers' full logits. All statistics are float32 and computed from log-probabilities with
elementwise products and cascade sums (a BLAS dot product here loses ~1e-3 nats).

Conventions: row 0 is the embedding output, row i the output of block i, row L the model's
own logits. Ranks are 1-based and count the tokens with a strictly higher probability, so
tied tokens share the better rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .heads import LensHead

DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024


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


def lens_inputs(hidden_states: tuple[torch.Tensor, ...], last_hidden: torch.Tensor,
                head: LensHead, kind: str) -> torch.Tensor:
    """What the unembedding reads at each layer: (layers, T, d) for one sequence.

    Layers < L get the final norm (``logit``) or not (``raw``); layer L is the backbone's
    last hidden state, which the model's own head reads (already normalised).
    """
    rows = []
    with torch.no_grad():
        for hidden in hidden_states[:-1]:
            rows.append(head.normalize(hidden) if kind == "logit" else hidden)
        rows.append(last_hidden)
    return torch.stack(rows)


def chunk_rows(vocab_size: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Positions per chunk so that the ~4 float32 (rows × vocab) buffers fit the budget."""
    return max(1, budget_bytes // (4 * 4 * vocab_size))


def run_lens(inputs: torch.Tensor, head: LensHead, input_ids: torch.Tensor, top_k: int,
             target_id: int | None = None, chunk: int | None = None) -> LensStats:
    """Statistics for one sequence. ``inputs`` is (layers, T, d) from :func:`lens_inputs`."""
    layers, length, _ = inputs.shape
    vocab = head.weight.shape[0]
    top_k = min(top_k, vocab)
    chunk = chunk or chunk_rows(vocab)
    ids = input_ids.to(inputs.device)
    next_ids = torch.cat([ids[1:], ids.new_zeros(1)])  # last position: placeholder, masked later

    topk_ids = torch.empty(layers, length, top_k, dtype=torch.int64)
    topk_probs = torch.empty(layers, length, top_k)
    entropy = torch.empty(layers, length)
    kl = torch.empty(layers, length)
    lse_all = torch.empty(layers, length)
    next_prob = torch.empty(layers, length)
    next_rank = torch.empty(layers, length, dtype=torch.int64)
    target_prob = torch.empty(layers, length) if target_id is not None else None
    target_rank = torch.empty(layers, length, dtype=torch.int64) if target_id is not None else None

    with torch.no_grad():
        for start in range(0, length, chunk):
            stop = min(length, start + chunk)
            rows = slice(start, stop)
            final_logp, final_p, final_neg_entropy = None, None, None
            # The final layer first: every other layer's KL needs its distribution.
            for layer in [layers - 1, *range(layers - 1)]:
                logp = head.logits(inputs[layer, rows])
                values, indices = torch.topk(logp, top_k, dim=-1)
                lse = torch.logsumexp(logp, dim=-1, keepdim=True)
                logp.sub_(lse)
                p = torch.exp(logp)
                neg_entropy = (p * logp).sum(-1)
                topk_ids[layer, rows] = indices.cpu()
                topk_probs[layer, rows] = torch.exp(values - lse).cpu()
                entropy[layer, rows] = (-neg_entropy).clamp_min(0).cpu()
                lse_all[layer, rows] = lse[:, 0].cpu()
                if final_logp is None:
                    final_logp, final_p, final_neg_entropy = logp, p, neg_entropy
                    kl[layer, rows] = 0.0
                else:
                    del p
                    cross = (final_p * logp).sum(-1)
                    kl[layer, rows] = (final_neg_entropy - cross).clamp_min(0).cpu()
                _probability_and_rank(logp, next_ids[rows], next_prob, next_rank, layer, rows)
                if target_prob is not None:
                    target = torch.full((stop - start,), target_id, device=logp.device)
                    _probability_and_rank(logp, target, target_prob, target_rank, layer, rows)
            del final_logp, final_p
    next_prob[:, -1] = float("nan")
    next_rank[:, -1] = 0
    tracked_ids, tracked_probs = _tracked(inputs, head, topk_ids, lse_all)
    return LensStats(
        topk_ids=topk_ids.numpy(), topk_probs=topk_probs.numpy(), entropy=entropy.numpy(),
        kl_to_final=kl.numpy(), next_token_prob=next_prob.numpy(),
        next_token_rank=next_rank.numpy(),
        target_prob=None if target_prob is None else target_prob.numpy(),
        target_rank=None if target_rank is None else target_rank.numpy(),
        tracked_ids=tracked_ids, tracked_probs=tracked_probs)


def _probability_and_rank(logp: torch.Tensor, token_ids: torch.Tensor, probs: torch.Tensor,
                          ranks: torch.Tensor, layer: int, rows: slice) -> None:
    chosen = logp.gather(1, token_ids[:, None])
    probs[layer, rows] = torch.exp(chosen[:, 0]).cpu()
    ranks[layer, rows] = ((logp > chosen).sum(-1) + 1).cpu()


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
