"""The Jacobian lens (Gurnee et al. 2026): row l + 1 reads ``final_norm(h_{l+1} @ J_l.T)``.

``J_l`` is the average Jacobian of the last block's output (before the final norm) with
respect to the output of block l (lens/jacobian_format.py; fitted by lens/fit/jacobian.py).
Rows without a matrix — the embeddings row, and any layer a lens file leaves out — are null,
never the logit lens's numbers; row L is the model's own logits, as for every lens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import LensReportError
from ...results.identity import file_digest
from .. import jacobian_format
from .base import Lens, LensSettingError, LoadedModelView

if TYPE_CHECKING:
    import torch

    from ..settings import LensSettings


@dataclass(frozen=True)
class JacobianLens(Lens):
    name = "jacobian"
    label = "Jacobian lens"
    line_dash = "dashdot"

    source: jacobian_format.JacobianSource | None = None
    model_reference: str = ""
    # Set by bind (or given, for a lens in memory): never part of equality or identity.
    artifact: jacobian_format.JacobianArtifact | None = field(default=None, compare=False,
                                                              repr=False)
    description: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: "LensSettings", model_reference: str, on_hub: bool
                      ) -> "JacobianLens":
        source = settings.jacobian
        if source is None:
            if not on_hub or jacobian_format.published_file(model_reference) is None:
                raise LensSettingError(
                    "the Jacobian lens needs a source: set lens.jacobian to a lens file (e.g. "
                    "one written by `lensreport fit-lens --kind jacobian`) or to {repo, file}; "
                    "published lenses are found for "
                    f"{len(jacobian_format.PUBLISHED)} Hub model ids")
            source = jacobian_format.JacobianSource()
        return cls(source, model_reference)

    @classmethod
    def for_model(cls, model_reference: str, source: "str | Path | None" = None
                  ) -> "JacobianLens":
        """The lens file ``source``, else the published lens of the model's Hub id."""
        if source is not None:
            return cls.from_file(source, model_reference)
        return cls(jacobian_format.JacobianSource(), model_reference)

    @classmethod
    def from_file(cls, path: "str | Path", model_reference: str = "") -> "JacobianLens":
        path = Path(path)
        return cls(jacobian_format.JacobianSource(file=path.resolve(), label=path.name),
                   model_reference)

    def _file(self):
        source = self.source or jacobian_format.JacobianSource()
        try:
            return jacobian_format.fetch(source, self.model_reference)
        except LensReportError as exc:
            if source.file is None:
                raise  # the Hub: offline, or no published lens for this model
            raise LensSettingError(str(exc)) from None

    def identity(self) -> str:
        return file_digest(self._file())

    def bind(self, session: LoadedModelView) -> "JacobianLens":
        source = self.source or jacobian_format.JacobianSource()
        label = source.describe(self.model_reference)
        artifact = self.artifact
        if artifact is None:
            artifact = jacobian_format.read(self._file())
        try:
            jacobian_format.check_fits(artifact, label, session.hidden_size, session.num_layers)
        except LensReportError as exc:
            raise LensSettingError(str(exc)) from None
        named = artifact.metadata.get("model_id") or artifact.metadata.get("model_name")
        notes: tuple[str, ...] = ()
        if isinstance(named, str) and named and named != session.reference:
            # Lenses are legitimately tried on fine-tunes: a warning (--strict fails).
            notes = (f"Jacobian lens {label} was fitted for '{named}', not for model "
                     f"'{session.name}' ({session.reference})",)
        device = session.head.weight.device
        matrices = {layer: matrix.to(device) for layer, matrix in artifact.matrices.items()}
        return replace(self, artifact=replace(artifact, matrices=matrices), notes=notes,
                       description={
            "jacobian": {"source": label, "n_prompts": artifact.n_prompts,
                         "source_layers": artifact.source_layers,
                         **{key: artifact.metadata[key] for key in
                            ("corpus", "skip_first", "context") if key in artifact.metadata}}})

    def rows(self, num_layers: int) -> tuple[int, ...]:
        if self.artifact is None:
            raise LensReportError("the Jacobian lens needs its matrices (bind it to a model)")
        return tuple(layer + 1 for layer in self.artifact.source_layers) + (num_layers,)

    def translate(self, layer: int, hidden: "torch.Tensor") -> "torch.Tensor":
        """``h @ J.T`` in float32 for row ``layer`` (source layer ``layer - 1``), returned in
        the hidden state's dtype (the final norm runs in the model's dtype)."""
        if self.artifact is None:
            raise LensReportError("the Jacobian lens needs its matrices (bind it to a model)")
        matrix = self.artifact.matrices[layer - 1]
        return (hidden.to(matrix.device).float() @ matrix.T).to(hidden.dtype)

    def warnings(self) -> list[str]:
        return list(self.notes)

    def describe(self) -> dict[str, Any]:
        return dict(self.description)
