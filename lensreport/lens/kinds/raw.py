"""The raw lens: row i reads ``unembed(h_i)``, no final norm (as the phi-1.5 tutorial did)."""

from __future__ import annotations

from dataclasses import dataclass
from ...errors import LensReportError
from .base import Lens, LoadedModelView


@dataclass(frozen=True)
class RawLens(Lens):
    name = "raw"
    label = "raw lens"
    line_dash = "dot"
    normalizes = False
    reads_mid_rows = True

    def bind(self, session: LoadedModelView) -> "RawLens":
        width, unembedding = session.hidden_size, session.head.weight.shape[1]
        if width != unembedding:
            raise LensReportError(f"the raw lens cannot read this model's hidden states (width "
                                  f"{width}) with its unembedding (width {unembedding}): its "
                                  "final norm projects them; use lens: {kind: logit}")
        return self
