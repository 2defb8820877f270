"""The corpus-curve metrics: one table for the curves code, the pages and the page script.

Each metric is a per-row mean over scored tokens (bits per byte: over scored bytes). ``log``
metrics span orders of magnitude from the first rows to the last and get a log axis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    log: bool = False


CORPUS_METRICS = (
    Metric("cross_entropy", "Cross-entropy (nats/token)", log=True),
    Metric("bits_per_byte", "Bits per byte", log=True),
    Metric("kl_to_final", "KL(final ‖ layer) (nats)", log=True),
    Metric("entropy", "Entropy (nats)"),
    Metric("top1_agrees_with_final", "Top-1 agrees with the final layer"),
    Metric("top1_accuracy", "Top-1 accuracy (actual next token)"),
)
# Fewer documents than this give no interval (null): a bootstrap over 1–4 units is not a
# 95 % interval (one document gives a zero-width one).
MIN_INTERVAL_DOCUMENTS = 5
# Summed per document and token; bits per byte is derived from cross-entropy.
SUMMED_METRICS = tuple(m.name for m in CORPUS_METRICS if m.name != "bits_per_byte")


def metric_table() -> list[dict[str, Any]]:
    """The table as the page script reads it (emitted into every corpus page)."""
    return [asdict(metric) for metric in CORPUS_METRICS]
