"""The tuned lens (Belrose et al. 2023): row i reads ``final_norm(h_i + A_i h_i + b_i)``.

Translators come from a lens folder in the tuned-lens format (lens/tuned_format.py): local,
or on the Hugging Face Hub (by default the tuned-lens project's published lenses).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import LensReportError
from ...results.identity import file_digest
from .. import tuned_format
from .base import Lens, LensSettingError, LoadedModelView

if TYPE_CHECKING:
    import torch

    from ..settings import LensSettings


@dataclass(frozen=True)
class TunedLens(Lens):
    name = "tuned"
    label = "tuned lens"
    line_dash = "dash"

    source: tuned_format.TunedSource | None = None
    model_reference: str = ""
    # Set by bind (or given, for a lens being trained): never part of equality or identity.
    translators: tuned_format.Translators | None = field(default=None, compare=False,
                                                         repr=False)
    description: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: "LensSettings", model_reference: str, on_hub: bool
                      ) -> "TunedLens":
        if settings.tuned is None and not on_hub:
            raise LensSettingError("the tuned lens needs a source: set lens.tuned to a lens "
                                  "folder (e.g. one written by `lensreport train-lens`); "
                                  "published lenses are found by Hub model id")
        return cls(settings.tuned or tuned_format.TunedSource(), model_reference)

    @classmethod
    def for_model(cls, model_reference: str, source: "str | Path | None" = None
                  ) -> "TunedLens":
        """The lens folder ``source``, else the published lens of the model's Hub id."""
        if source is not None:
            folder = Path(source)
            return cls(tuned_format.TunedSource(folder=folder.resolve(), label=folder.name),
                       model_reference)
        return cls(model_reference=model_reference)

    @classmethod
    def from_translators(cls, translators: tuned_format.Translators) -> "TunedLens":
        """A lens from translators in memory (train-lens evaluates the lens it trains)."""
        return cls(translators=translators)

    def _folder(self):
        source = self.source or tuned_format.TunedSource()
        try:
            return tuned_format.fetch(source, self.model_reference)
        except LensReportError as exc:
            if source.folder is None:
                raise  # the Hub: offline, or no published lens for this model
            raise LensSettingError(f"{exc} — train one with `lensreport train-lens MANIFEST "
                                  "--model NAME --corpus FILE`") from None

    def identity(self) -> str:
        folder = self._folder()
        return "|".join(file_digest(folder / name)
                        for name in (tuned_format.CONFIG_FILE, tuned_format.PARAMS_FILE))

    def bind(self, session: LoadedModelView) -> "TunedLens":
        if self.translators is not None:
            return self
        folder = self._folder()
        config = tuned_format.read_config(folder)
        tuned_format.check_shape(config, session.hidden_size, session.num_layers)
        source = self.source or tuned_format.TunedSource()
        expected = config.get("unembed_hash")
        notes: tuple[str, ...] = ()
        if expected and expected != tuned_format.unembed_hash(session.head.weight):
            # Lenses are legitimately reused across fine-tunes: a warning (--strict fails).
            notes = (f"tuned lens {source.describe(self.model_reference)} was trained for "
                     f"another unembedding than model '{session.name}' has (lens: "
                     f"{config.get('base_model_name_or_path')}, unembed_hash "
                     f"{expected[:12]}…; model: {session.reference}, unembed_hash "
                     f"{tuned_format.unembed_hash(session.head.weight)[:12]}…)",)
        return replace(self, translators=tuned_format.Translators.load(
            folder, session.head.weight.device), notes=notes, description={
            "tuned": {"source": source.describe(self.model_reference),
                      "base_model": config.get("base_model_name_or_path")}})

    def translate(self, layer: int, hidden: "torch.Tensor") -> "torch.Tensor":
        if self.translators is None:
            raise LensReportError("the tuned lens needs its translators (bind it to a model)")
        return self.translators.apply(layer, hidden.to(self.translators.weights[layer].device))

    def warnings(self) -> list[str]:
        return list(self.notes)

    def describe(self) -> dict[str, Any]:
        return dict(self.description)
