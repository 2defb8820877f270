"""A model's lens settings: which lens kinds read it and where fitted lenses come from.

The manifest layer fills them in; lens kinds read them (this module sits below both).
"""

from __future__ import annotations

from dataclasses import dataclass

from .jacobian_format import JacobianSource
from .tuned_format import TunedSource


# Patchscopes' token-identity prompt (Ghandeharioun et al. 2024, section 4.1): the model
# continues "x -> x" pairs, so at the "?" it says what the patched state stands for.
TOKEN_IDENTITY_PROMPT = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"


@dataclass(frozen=True)
class PatchscopeTarget:
    """Where the patchscope lens writes a state: the target prompt (tokenized as the
    tokenizer does by default) and the token position in it (negative counts from the end;
    the default is its last token)."""

    text: str = TOKEN_IDENTITY_PROMPT
    position: int = -1


# Which rows documents have: each block's output, or also the stream after its attention.
ROW_SETTINGS = ("block", "sublayer")


@dataclass(frozen=True)
class LensSettings:
    """Which lenses read the hidden states (names from the lens registry, lens/kinds/), the
    number of top tokens kept per cell, where a tuned lens and a Jacobian lens come
    from, and the patchscope's target. The first kind is the model's main figure.
    ``decompose``: each prompt document carries its direct logit attribution
    (lens/decompose.py); ``rows``: block outputs only, or a row after each attention too."""

    kinds: tuple[str, ...] = ("logit",)
    top_k: int = 5
    tuned: TunedSource | None = None
    jacobian: JacobianSource | None = None
    patchscope: PatchscopeTarget = PatchscopeTarget()
    decompose: bool = True
    rows: str = "block"  # or "sublayer": a row after each block's attention too

    @property
    def sublayer(self) -> bool:
        return self.rows == "sublayer"

    @property
    def kind(self) -> str:
        """The model's main lens (its figures and pages open with it)."""
        return self.kinds[0]
