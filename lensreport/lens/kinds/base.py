"""What a lens is: a rule for what the final norm and unembedding read at each row.

Row i of every lens is ``hidden_states[i]`` (row 0 = embeddings, row i = the output of block
i) read through the lens; row L is always the model's own logits. A lens says what it does to
``h_i`` before the final norm (``translate``), whether the final norm is applied at all
(``normalizes``; a lens that runs the model's own upper blocks reads what the model's final
norm returned), which rows it reads (``rows``: a row it has nothing for, such as the
Jacobian lens's embeddings row, is null in documents and blank on pages, never another
lens's numbers), its content identity (for cache keys) and its description (for documents
and pages). The tiled pass, corpus curves, fitting, pages and the notebook take Lens
objects; none of them switches on a lens's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Protocol, Sequence

from ...errors import LensReportError

if TYPE_CHECKING:  # torch is imported where lenses run: manifests are read without it
    import torch

    from ..settings import LensSettings
    from ...models.heads import LensHead
    from ...models.patching import PatchRunner


class LoadedModelView(Protocol):
    """What a lens may know of the model it binds to (the engine's ModelSession is one)."""

    @property
    def name(self) -> str: ...
    @property
    def reference(self) -> str: ...
    @property
    def head(self) -> "LensHead": ...
    @property
    def num_layers(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    def encode(self, text: str) -> list[int]:
        """``text`` as the model's tokenizer encodes it by default."""
    def patch_runner(self, target_ids: list[int], position: int, prefix_cache: bool = True
                     ) -> "PatchRunner":
        """The model ready to run ``target_ids`` with the state at ``position`` replaced
        (for a lens that reads a state with the blocks above its row)."""


class LensSettingError(LensReportError):
    """The manifest's settings for a lens are wrong (a missing source, a folder without a
    lens): the manifest layer reports it at the model's line."""


@dataclass(frozen=True)
class Lens:
    """A lens kind. Subclasses set ``name`` and override what differs from the logit lens."""

    name: ClassVar[str]
    label: ClassVar[str]  # how pages name it, e.g. "logit lens"
    line_dash: ClassVar[str] = "dot"  # Plotly dash style of its curves on comparison charts
    normalizes: ClassVar[bool] = True  # apply the final norm after translate()
    # Reads the stream after a block's attention (sub-layer rows) as it reads block outputs;
    # a lens fitted to block outputs (tuned, Jacobian) leaves those rows null.
    reads_mid_rows: ClassVar[bool] = False

    @classmethod
    def from_settings(cls, settings: "LensSettings", model_reference: str, on_hub: bool
                      ) -> "Lens":
        """The lens for one model from the manifest's lens settings (cheap: nothing loaded)."""
        return cls()

    @classmethod
    def for_model(cls, model_reference: str, source: "str | Path | None" = None) -> "Lens":
        """The lens for a model in a notebook (``lens="name"``): read from ``source`` (a
        kind's file or folder) where the kind takes one, else its default settings."""
        if source is not None:
            raise LensReportError(f"the {cls.label} takes no source (got {source})")
        return cls()

    def identity(self) -> str | None:
        """Content that sets this lens's numbers beyond its name (e.g. a tuned lens's file
        digests), for cache keys; None when the name says it all."""
        return None

    def bind(self, session: LoadedModelView) -> "Lens":
        """This lens ready to read one loaded model (weights loaded, shapes checked); raises
        LensReportError when it does not fit the model."""
        return self

    def rows(self, num_layers: int) -> tuple[int, ...]:
        """The rows 0 … L this lens reads, ascending; always ends with row L (the model's
        own logits). Called on a bound lens."""
        return tuple(range(num_layers + 1))

    def translate(self, layer: int, hidden: "torch.Tensor") -> "torch.Tensor":
        """What the final norm reads at row ``layer`` < L."""
        return hidden

    def translate_rows(self, layers: "Sequence[int]", hidden_states: "Sequence[torch.Tensor]"
                       ) -> "Iterator[torch.Tensor]":
        """:meth:`translate` for each of ``layers`` (< L), in order. A lens that reads many
        rows in one pass (the patchscope runs the model once for several rows) overrides it."""
        for layer in layers:
            yield self.translate(layer, hidden_states[layer])

    def warnings(self) -> list[str]:
        """What binding found worth a warning (e.g. a lens made for another model): kept in
        each document, so a build served from the cache warns again (--strict fails)."""
        return []

    def describe(self) -> dict[str, Any]:
        """Fields this lens adds to a document's ``lens`` description (after kind and head)."""
        return {}
