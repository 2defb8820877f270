"""Jacobian lenses (Gurnee et al. 2026) in the reference implementation's artifact format.

A J-lens holds one d_model × d_model matrix ``J_l`` per source layer l (the output of block
l, ``hidden_states[l + 1]``): the average first-order effect of the residual stream there on
the output of the last block before the final norm. Row l + 1 reads
``final_norm(h @ J_l.T)``. On disk (as TransformerLens 4.3's ``JacobianLens.save`` and the
reference implementation write it) a lens is one ``torch.save`` dict:

* ``J``: ``{layer: [d, d] tensor}`` (float16 by default), ``n_prompts``, ``source_layers``,
  ``d_model``, optional ``metadata`` (plain values only);

or the fitting checkpoint form: ``jacobian_sum`` (running sums), ``n_done``, ``next_idx``,
``source_layers``, ``target_layer``, ``skip_first`` (read as the sums divided by ``n_done``).
Files are read with ``weights_only=True``: a lens file never runs code.

Published lenses (``neuronpedia/jacobian-lens`` on the Hub) are found for a Hub model id
through :data:`PUBLISHED`, the table TransformerLens 4.3 ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LensReportError, first_line
from ..results.concurrency import replace_file

if TYPE_CHECKING:
    import torch

DEFAULT_REPO = "neuronpedia/jacobian-lens"
# The revision TransformerLens 4.3 pins for the published lenses.
DEFAULT_REVISION = "a4114d7752d11eb546e6cf372213d7e75526d3a1"
# Hub model id -> (folder, file stem) in DEFAULT_REPO: <folder>/jlens/Salesforce-wikitext/
# <stem>_jacobian_lens.pt.
PUBLISHED: dict[str, tuple[str, str]] = {
    "google/gemma-2-2b": ("gemma-2-2b", "gemma-2-2b"),
    "google/gemma-2-2b-it": ("gemma-2-2b-it", "gemma-2-2b-it"),
    "google/gemma-2-9b": ("gemma-2-9b", "gemma-2-9b"),
    "google/gemma-2-9b-it": ("gemma-2-9b-it", "gemma-2-9b-it"),
    "google/gemma-2-27b": ("gemma-2-27b", "gemma-2-27b"),
    "google/gemma-3-270m": ("gemma-3-270m", "gemma-3-270m"),
    "google/gemma-3-270m-it": ("gemma-3-270m-it", "gemma-3-270m-it"),
    "google/gemma-3-1b-pt": ("gemma-3-1b", "gemma-3-1b-pt"),
    "google/gemma-3-1b-it": ("gemma-3-1b-it", "gemma-3-1b-it"),
    "google/gemma-3-4b-pt": ("gemma-3-4b", "gemma-3-4b-pt"),
    "google/gemma-3-4b-it": ("gemma-3-4b-it", "gemma-3-4b-it"),
    "google/gemma-3-12b-pt": ("gemma-3-12b", "gemma-3-12b-pt"),
    "google/gemma-3-12b-it": ("gemma-3-12b-it", "gemma-3-12b-it"),
    "google/gemma-3-27b-pt": ("gemma-3-27b", "gemma-3-27b-pt"),
    "google/gemma-3-27b-it": ("gemma-3-27b-it", "gemma-3-27b-it"),
    "google/gemma-4-31b": ("gemma-4-31b", "gemma-4-31B"),
    "google/gemma-4-e2b": ("gemma-4-e2b", "gemma-4-E2B"),
    "google/gemma-4-e4b": ("gemma-4-e4b", "gemma-4-E4B"),
    "gpt2": ("gpt2-small", "gpt2"),
    "openai-community/gpt2": ("gpt2-small", "gpt2"),
    "openai/gpt-oss-20b": ("gpt-oss-20b", "gpt-oss-20b"),
    "meta-llama/Llama-3.1-8B": ("llama3.1-8b", "Llama-3.1-8B"),
    "meta-llama/Llama-3.1-8B-Instruct": ("llama3.1-8b-it", "Llama-3.1-8B-Instruct"),
    "meta-llama/Llama-3.3-70B-Instruct": ("llama3.3-70b-it", "Llama-3.3-70B-Instruct"),
    "allenai/OLMo-3-1025-7B": ("olmo-3-1025-7b", "Olmo-3-1025-7B"),
    "allenai/OLMo-3-1125-32B": ("olmo-3-1125-32b", "Olmo-3-1125-32B"),
    "EleutherAI/pythia-70m-deduped": ("pythia-70m-deduped", "pythia-70m-deduped"),
    "Qwen/Qwen2.5-7B-Instruct": ("qwen2.5-7b-it", "Qwen2.5-7B-Instruct"),
    "Qwen/Qwen3-1.7B": ("qwen3-1.7b", "Qwen3-1.7B"),
    "Qwen/Qwen3-4B": ("qwen3-4b", "Qwen3-4B"),
    "Qwen/Qwen3-8B": ("qwen3-8b", "Qwen3-8B"),
    "Qwen/Qwen3-14B": ("qwen3-14b", "Qwen3-14B"),
    "Qwen/Qwen3-32B": ("qwen3-32b", "Qwen3-32B"),
    "Qwen/Qwen3.5-0.8B": ("qwen3.5-0.8b", "Qwen3.5-0.8B"),
    "Qwen/Qwen3.5-2B": ("qwen3.5-2b-pt", "Qwen3.5-2B-Base"),
    "Qwen/Qwen3.5-4B": ("qwen3.5-4b", "Qwen3.5-4B"),
    "Qwen/Qwen3.5-9B": ("qwen3.5-9b-pt", "Qwen3.5-9B-Base"),
    "Qwen/Qwen3.5-27B": ("qwen3.5-27b", "Qwen3.5-27B"),
}


def published_file(model_reference: str) -> str | None:
    """The published lens's file in DEFAULT_REPO for a Hub model id (case-insensitive)."""
    by_lower = {key.lower(): value for key, value in PUBLISHED.items()}
    found = by_lower.get(model_reference.lower())
    if found is None:
        return None
    folder, stem = found
    return f"{folder}/jlens/Salesforce-wikitext/{stem}_jacobian_lens.pt"


@dataclass(frozen=True)
class JacobianSource:
    """Where a J-lens comes from: a local file, or a file in a Hub repository (by default
    the published lens of the model's Hub id)."""

    file: Path | None = None
    repo: str = DEFAULT_REPO
    filename: str | None = None  # in the repo; default: the published table's entry
    revision: str | None = None
    # How the manifest wrote the path (relative to it): what documents and pages show.
    label: str | None = None

    def hub_file(self, model_reference: str) -> str | None:
        return self.filename or published_file(model_reference)

    def describe(self, model_reference: str) -> str:
        if self.file is not None:
            return self.label or self.file.name
        revision = self.revision or (DEFAULT_REVISION if self.repo == DEFAULT_REPO else None)
        return (f"{self.repo}, {self.hub_file(model_reference) or '(no published lens)'}"
                f"{'@' + revision[:12] if revision else ''}")


def fetch(source: JacobianSource, model_reference: str) -> Path:
    """A local lens file (downloaded once when on the Hub)."""
    if source.file is not None:
        if not source.file.is_file():
            raise LensReportError(f"Jacobian lens {source.label or source.file}: no such file "
                                  "— fit one with `lensreport fit-lens MANIFEST --model NAME "
                                  "--kind jacobian --corpus FILE`")
        return source.file
    filename = source.hub_file(model_reference)
    if filename is None:
        raise LensReportError(f"no published Jacobian lens for '{model_reference}' (lensreport "
                              f"knows {len(PUBLISHED)} in {DEFAULT_REPO}); set lens.jacobian "
                              "to a lens file or to {repo, file, revision}")
    revision = source.revision or (DEFAULT_REVISION if source.repo == DEFAULT_REPO else None)
    try:
        from huggingface_hub import hf_hub_download

        from ..models.references import hub_reachable

        return Path(hf_hub_download(repo_id=source.repo, filename=filename, revision=revision,
                                    local_files_only=not hub_reachable()))
    except Exception as exc:  # noqa: BLE001 - offline, missing file, gated repo: one line
        raise LensReportError(f"no Jacobian lens for '{model_reference}' at {source.repo}, "
                              f"{filename}: {first_line(exc, 200)} — check the network "
                              "(HF_HUB_OFFLINE), or fit one with `lensreport fit-lens` and set "
                              "lens.jacobian to its file") from None


@dataclass
class JacobianArtifact:
    """A J-lens in memory: float32 matrices by source layer, and what the file says."""

    matrices: dict[int, "torch.Tensor"]
    n_prompts: int
    d_model: int
    metadata: dict[str, Any]

    @property
    def source_layers(self) -> list[int]:
        return sorted(self.matrices)


def read(path: Path) -> JacobianArtifact:
    """A lens file in either form (final or fitting checkpoint), matrices in float32."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, foreign or code-carrying file: one line
        raise LensReportError(f"Jacobian lens {path}: cannot read it ({first_line(exc, 160)}); "
                              "a J-lens file is a torch.save dict with J (or jacobian_sum)"
                              ) from None
    if not isinstance(payload, dict) or not ("J" in payload or "jacobian_sum" in payload):
        raise LensReportError(f"Jacobian lens {path}: not a J-lens file (a dict with J, or "
                              "jacobian_sum and n_done)")
    checkpoint = "J" not in payload
    raw = payload["jacobian_sum"] if checkpoint else payload["J"]
    n_done = int(payload.get("n_done", payload.get("n_prompts", 0))) if checkpoint else \
        int(payload.get("n_prompts", 0))
    if checkpoint and n_done < 1:
        raise LensReportError(f"Jacobian lens {path}: a fitting checkpoint with n_done = "
                              f"{n_done} holds no prompts yet")
    try:
        matrices = {int(layer): matrix.detach().float() / (n_done if checkpoint else 1)
                    for layer, matrix in dict(raw).items()}
    except (TypeError, ValueError, AttributeError):
        raise LensReportError(f"Jacobian lens {path}: its matrices must be tensors keyed by "
                              "layer number") from None
    if not matrices:
        raise LensReportError(f"Jacobian lens {path}: holds no matrices")
    widths = {tuple(matrix.shape) for matrix in matrices.values()}
    if len(widths) != 1 or len(next(iter(widths))) != 2 or len(set(next(iter(widths)))) != 1:
        raise LensReportError(f"Jacobian lens {path}: matrices must all be d × d (found "
                              f"{sorted(widths)})")
    d_model = int(payload.get("d_model") or next(iter(widths))[0])
    metadata = dict(payload.get("metadata") or {})
    if checkpoint:
        for key in ("target_layer", "skip_first"):
            if key in payload:
                metadata.setdefault(key, payload[key])
    return JacobianArtifact(matrices, n_done, d_model, metadata)


def check_fits(artifact: JacobianArtifact, label: str, hidden_size: int, num_layers: int
               ) -> None:
    """A lens for another width or depth is an error before any lens work."""
    if artifact.d_model != hidden_size or next(iter(artifact.matrices.values())).shape[0] \
            != hidden_size:
        raise LensReportError(f"the Jacobian lens {label} is for d_model {artifact.d_model}, "
                              f"the model's is {hidden_size}: use a lens fitted for this model")
    outside = [layer for layer in artifact.source_layers if not 0 <= layer <= num_layers - 2]
    if outside:
        raise LensReportError(f"the Jacobian lens {label} has matrices for layer(s) "
                              f"{outside}, outside 0 … {num_layers - 2} of this "
                              f"{num_layers}-layer model: use a lens fitted for this model")


def plain(value: Any) -> Any:
    """Metadata as torch.load(weights_only=True) reads it back: plain values only."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)


def write(path: Path, matrices: dict[int, "torch.Tensor"], n_prompts: int,
          metadata: dict[str, Any], dtype: "torch.dtype | None" = None) -> None:
    """The final artifact (float16 matrices by default), written atomically."""
    import torch

    dtype = dtype or torch.float16
    d_model = next(iter(matrices.values())).shape[0]
    payload = {"J": {int(layer): matrices[layer].detach().to("cpu", dtype).contiguous()
                     for layer in sorted(matrices)},
               "n_prompts": int(n_prompts), "source_layers": sorted(int(k) for k in matrices),
               "d_model": int(d_model)}
    if metadata:
        payload["metadata"] = plain(metadata)
    _save(payload, path)


def write_checkpoint(path: Path, sums: dict[int, "torch.Tensor"], n_done: int, next_idx: int,
                     target_layer: int, skip_first: int, metadata: dict[str, Any],
                     complete: bool = False) -> None:
    """Running sums in the reference's checkpoint form (float32), written atomically: what
    a resumed fit or a shard merge adds to. ``complete`` marks a shard whose every planned
    prompt is in the sums (merging requires it)."""
    import torch

    payload = {"jacobian_sum": {int(layer): sums[layer].detach().to("cpu", torch.float32)
                                .contiguous()
                                for layer in sorted(sums)},
               "n_done": int(n_done), "next_idx": int(next_idx),
               "source_layers": sorted(int(k) for k in sums), "target_layer": int(target_layer),
               "skip_first": int(skip_first), "metadata": plain(metadata),
               "complete": bool(complete)}
    _save(payload, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's raw payload (sums, counts, metadata) for resuming and merging."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise LensReportError(f"Jacobian lens checkpoint {path}: cannot read it "
                              f"({first_line(exc, 160)})") from None
    if not isinstance(payload, dict) or "jacobian_sum" not in payload:
        raise LensReportError(f"{path}: not a Jacobian lens checkpoint (running sums from "
                              "`lensreport fit-lens --kind jacobian --shard K/N`)")
    return payload


def _save(payload: dict[str, Any], path: Path) -> None:
    """Staged under a name of its own, renamed into place (readers never see half a file;
    processes writing at once never share a temporary file)."""
    import torch

    replace_file(path, lambda partial: torch.save(payload, partial), kind="partial")
