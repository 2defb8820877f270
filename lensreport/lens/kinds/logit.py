"""The logit lens (nostalgebraist 2020): row i reads ``unembed(final_norm(h_i))``."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Lens


@dataclass(frozen=True)
class LogitLens(Lens):
    name = "logit"
    label = "logit lens"
    line_dash = "solid"
    reads_mid_rows = True
