"""The token-identity patchscope (Ghandeharioun et al., ICML 2024): the model reads its own
state with its upper blocks.

Row l < L at source position p: the target prompt runs with its state at row l of the
target position (row 0 = the embeddings' output, row l = block l's output) replaced by the
source's row-l state at p, continues through blocks l+1 … L, and the model's own output at
the target position is read (its final norm, then the unembedding, softcap and scales as
for every row). Row L is the model's own logits at p, as for every lens. The default
target is Patchscopes' token-identity prompt, ending in "?": the model is asked to repeat
what the patched state stands for.

nnterp's ``patchscope_lens`` defaults to "king king\\n1135 1135\\nhello hello\\n?" and counts
its layers from block 1's output (its layer i is row i + 1 here); the README says more.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ...errors import LensReportError
from ..settings import PatchscopeTarget
from .base import Lens, LoadedModelView

if TYPE_CHECKING:
    import torch

    from ...models.patching import PatchRunner
    from ..settings import LensSettings


@dataclass(frozen=True)
class PatchscopeLens(Lens):
    name = "patchscope"
    label = "patchscope"
    line_dash = "longdash"
    # The runner's output is after the model's own final norm (never normalised twice).
    normalizes = False

    target: PatchscopeTarget = PatchscopeTarget()
    # Off only to test the cached path against running the whole target prompt per cell
    # (same numbers: not part of the identity).
    prefix_cache: bool = True
    # Set by bind: never part of equality or identity.
    runner: "PatchRunner | None" = field(default=None, compare=False, repr=False)
    description: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: "LensSettings", model_reference: str, on_hub: bool
                      ) -> "PatchscopeLens":
        return cls(settings.patchscope)

    def identity(self) -> str:
        return f"target={self.target.text!r}|position={self.target.position}"

    def bind(self, session: LoadedModelView) -> "PatchscopeLens":
        if self.runner is not None:
            return self
        ids = session.encode(self.target.text)
        position = self.target.position + (len(ids) if self.target.position < 0 else 0)
        if not 0 <= position < len(ids):
            raise LensReportError(
                f"patchscope target position {self.target.position} is outside the target "
                f"prompt's {len(ids)} tokens for model '{session.name}'; set "
                "lens.patchscope.position to an index from 0 (negative counts from the end)")
        runner = session.patch_runner(ids, position, self.prefix_cache)
        return replace(self, runner=runner, description={"patchscope": {
            "source": f"target prompt {self.target.text!r}, token {position}",
            "target_prompt": self.target.text, "target_ids": ids, "target_position": position,
            "prefix_cache": runner.prefix_cached}})

    def translate(self, layer: int, hidden: "torch.Tensor") -> "torch.Tensor":
        return next(self.translate_rows([layer], {layer: hidden}))

    def translate_rows(self, layers: Sequence[int], hidden_states: Any
                       ) -> Iterator["torch.Tensor"]:
        """Every (row, position) cell in batches that mix rows, so short prompts fill them."""
        import torch

        if self.runner is None:
            raise LensReportError("the patchscope needs a model to run (bind it to one)")
        if not layers:
            return
        device = hidden_states[layers[0]].device
        states = torch.cat([hidden_states[layer].to(device) for layer in layers])
        positions = hidden_states[layers[0]].shape[0]
        rows = torch.tensor(layers).repeat_interleave(positions)
        yield from self.runner.outputs(rows, states).split(positions)

    def describe(self) -> dict[str, Any]:
        return dict(self.description)
