"""A model's lens settings: which lens kinds read it and where fitted lenses come from.

The manifest layer fills them in; lens kinds read them (this module sits below both).
"""

from __future__ import annotations

from dataclasses import dataclass

from .jacobian_format import JacobianSource
from .tuned_format import TunedSource


# Which rows documents have: each block's output, or also the stream after its attention.
ROW_SETTINGS = ("block", "sublayer")


@dataclass(frozen=True)
class LensSettings:
    """Which lenses read the hidden states (names from the lens registry, lens/kinds/), the
    number of top tokens kept per cell, and where a tuned lens and a Jacobian lens come
    from. The first kind is the model's main figure. ``decompose``: each prompt document
    carries its direct logit attribution (lens/decompose.py)."""

    kinds: tuple[str, ...] = ("logit",)
    top_k: int = 5
    tuned: TunedSource | None = None
    jacobian: JacobianSource | None = None
    decompose: bool = True
    rows: str = "block"  # or "sublayer": a row after each block's attention too

    @property
    def sublayer(self) -> bool:
        return self.rows == "sublayer"

    @property
    def kind(self) -> str:
        """The model's main lens (its figures and pages open with it)."""
        return self.kinds[0]
