"""Corpus curves: per-layer averages over a corpus, from the same tiled pass as prompts.

For every row 0 … L (layer 0 = embeddings, L = the model's output) and every scored position
(see corpus.py for windows and bytes): cross-entropy of the actual next token (nats), KL to
the final row, entropy, whether the row's top-1 equals the final row's top-1, and whether it
equals the actual next token. Sums are kept per document in float64, so the 95 % intervals
come from a seeded bootstrap over documents (the unit that is sampled, not tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import torch

from ..results.documents import significant
from ..results.metrics import MIN_INTERVAL_DOCUMENTS
from ..results.metrics import SUMMED_METRICS as METRICS
from .corpus import Window
from .kinds import Lens
from .tiled import CellStatistics, lens_inputs, next_token_ids, stream

if TYPE_CHECKING:
    from .engine import ModelSession

BOOTSTRAP_SAMPLES = 1000
WINDOWS_PER_GROUP = 64  # windows whose hidden states are computed before the lens runs


@dataclass
class CorpusSums:
    """Per-document sums: ``sums[metric]`` is (documents, rows); counts are per document."""

    rows: int
    groups: list[tuple[str, list[int]]] = field(default_factory=list)  # token groups (name, ids)
    sums: dict[str, list[np.ndarray]] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    documents: list[int] = field(default_factory=list)  # corpus index of each entry
    _entry: dict[int, int] = field(default_factory=dict, repr=False)  # document -> entry

    def add(self, document: int, values: dict[str, np.ndarray], tokens: int,
            covered: int) -> None:
        """Add one window's sums to its document's entry: a document is one bootstrap unit,
        whatever order its windows arrive in (the engine batches them by length)."""
        entry = self._entry.get(document)
        if entry is None:
            entry = self._entry[document] = len(self.documents)
            self.documents.append(document)
            self.tokens.append(0)
            self.bytes.append(0)
            for metric in self.metrics:
                self.sums.setdefault(metric, []).append(np.zeros(self.rows))
        for metric in self.metrics:
            self.sums[metric][entry] += values[metric]
        self.tokens[entry] += tokens
        self.bytes[entry] += covered

    @property
    def metrics(self) -> tuple[str, ...]:
        """The summed metrics: the table's, and each group's probability ("group:<name>")."""
        return METRICS + tuple(f"group:{name}" for name, _ in self.groups)

    @property
    def scored_tokens(self) -> int:
        return int(sum(self.tokens))

    @property
    def scored_bytes(self) -> int:
        return int(sum(self.bytes))

    def curves(self, seed: int = 0) -> dict[str, Any]:
        """Means per row with 95 % bootstrap intervals; bits per byte from cross-entropy."""
        # Documents in corpus order, so the seeded resamples do not depend on the order in
        # which batching delivered their windows.
        order = np.argsort(self.documents, kind="stable")
        tokens = np.array(self.tokens, dtype=np.float64)[order]
        covered = np.array(self.bytes, dtype=np.float64)[order]
        per_document = {metric: np.stack(self.sums[metric])[order] for metric in self.metrics}
        per_document["bits_per_byte"] = per_document["cross_entropy"] / math.log(2)
        denominators = {metric: tokens for metric in self.metrics}
        denominators["bits_per_byte"] = covered
        rng = np.random.default_rng(seed)
        count = len(tokens)
        weights = rng.multinomial(count, np.full(count, 1.0 / count), size=BOOTSTRAP_SAMPLES)
        out: dict[str, Any] = {}
        group_curves: dict[str, tuple[list[Any], Any]] = {}
        for metric, values in per_document.items():
            denominator = denominators[metric]
            mean = values.sum(0) / max(denominator.sum(), 1.0)
            resampled = (weights @ values) / np.maximum(weights @ denominator, 1.0)[:, None]
            low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
            # A row the lens does not cover is NaN in the sums: null in the curves.
            is_group = metric.startswith("group:")
            rounded = significant if is_group else _decimals
            curve = [rounded(v) if np.isfinite(v) else None for v in mean]
            interval = None if count < MIN_INTERVAL_DOCUMENTS else [
                [rounded(a), rounded(b)] if np.isfinite(a) else None
                for a, b in zip(low, high)]
            if is_group:  # kept apart: a group named "x_ci" is not group x's interval
                group_curves[metric] = curve, interval
            else:
                out[metric], out[f"{metric}_ci"] = curve, interval
        # Group curves: mean summed probability of each token group per row, to 4
        # significant digits (a rare word's group is far below 1e-6 at early rows).
        out["target_groups"] = [{"name": name, "ids": list(ids),
                                 "prob": group_curves[f"group:{name}"][0],
                                 "prob_ci": group_curves[f"group:{name}"][1]}
                                for name, ids in self.groups]
        return out


def _decimals(value: float) -> float:
    return round(float(value), 6)


def _groups(windows: Iterable[Window]) -> Iterator[list[Window]]:
    group: list[Window] = []
    for window in windows:
        group.append(window)
        if len(group) == WINDOWS_PER_GROUP:
            yield group
            group = []
    if group:
        yield group


def measure(session: "ModelSession", windows: Iterable[Window], lenses: list[Lens],
            progress: Callable[[int], Any] | None = None,
            groups: list[tuple[str, list[int]]] = ()) -> dict[Lens, CorpusSums]:
    """Sums per lens over all windows; one forward pass per window serves every lens.
    ``groups`` (name, ids) add a mean group-probability curve each."""
    head = session.head
    rows = session.num_layers + 1
    bound = {lens: session.bind(lens) for lens in lenses}
    covered = {lens: list(bound[lens].rows(session.num_layers)) for lens in lenses}
    results = {lens: CorpusSums(rows, list(groups)) for lens in lenses}
    group_ids = [torch.tensor(ids, device=head.weight.device) for _, ids in groups]
    for batch in _groups(windows):
        for index, hidden, last in session.hidden_states([w.input_ids for w in batch]):
            window = batch[index]
            next_ids = next_token_ids(torch.tensor(window.input_ids, device=head.weight.device))
            scored = len(window.input_ids) - 1
            for lens in lenses:
                with torch.no_grad():
                    inputs = lens_inputs(hidden, last, head, bound[lens])
                    cells = stream(inputs, head, next_ids, 1, ranks=False, groups=group_ids)
                values = _window_sums(cells, covered[lens], rows, scored, next_ids)
                for (name, _), member in zip(groups, cells.groups):
                    values[f"group:{name}"] = _placed(_grid(member.prob, len(covered[lens]),
                                                            scored), covered[lens], rows)
                results[lens].add(window.document, values, scored, sum(window.target_bytes))
            if progress is not None:
                progress(scored)
    return results


def _grid(values: torch.Tensor, width: int, scored: int) -> torch.Tensor:
    """Flat cells -> (scored positions, covered rows), in float64 for the sums."""
    return values.reshape(-1, width)[:scored].double()


def _placed(values: torch.Tensor, covered: list[int], rows: int) -> np.ndarray:
    """Per-row sums over positions, NaN at the rows the lens does not cover."""
    out = np.full(rows, np.nan)
    out[covered] = values.sum(0).cpu().numpy()
    return out


def _window_sums(cells: CellStatistics, covered: list[int], rows: int, scored: int,
                 next_ids: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-row sums over a window's scored positions (all but its last); ``cells`` hold the
    ``covered`` rows, the others are NaN."""
    width = len(covered)

    def grid(values: torch.Tensor) -> torch.Tensor:
        return _grid(values, width, scored)

    def placed(values: torch.Tensor) -> np.ndarray:
        return _placed(values, covered, rows)

    top1 = cells.top_ids[:, 0].reshape(-1, width)[:scored]
    cross_entropy = grid(cells.lse - cells.next_token.own)
    return {
        "cross_entropy": placed(cross_entropy),
        "kl_to_final": placed(grid(cells.kl_to_final)),
        "entropy": placed(grid(cells.entropy)),
        "top1_agrees_with_final": placed((top1 == top1[:, -1:]).double()),
        "top1_accuracy": placed((top1 == next_ids[:scored, None]).double()),
    }
