"""Tuned lenses (Belrose et al. 2023) in the tuned-lens library's artifact format.

A tuned lens is one affine translator per layer i = 0 … L-1, applied residually before the
final norm and unembedding: row i reads ``final_norm(h_i + A_i h_i + b_i)``; row L stays the
model's own logits. On disk (as the tuned-lens library writes it) a lens is a folder with

* ``config.json``: base_model_name_or_path, d_model, num_hidden_layers, bias,
  base_model_revision, unembed_hash, lens_type ("linear_tuned_lens");
* ``params.pt``: a state dict ``0.weight``, ``0.bias``, … ``{L-1}.bias``.

Lenses are read from a local folder or downloaded from the Hugging Face Hub — by default the
lenses the tuned-lens project publishes in the Space ``AlignmentResearch/tuned-lens``, folder
``lens/<model id>/``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LensReportError, first_line
from ..results.concurrency import replace_file

if TYPE_CHECKING:  # torch is imported where lenses are used: manifests read without it
    import torch

log = logging.getLogger("lensreport")

DEFAULT_REPO = "AlignmentResearch/tuned-lens"
DEFAULT_REPO_TYPE = "space"
LENS_TYPE = "linear_tuned_lens"
CONFIG_FILE, PARAMS_FILE = "config.json", "params.pt"
# Old files carry misspelt keys; read them under their right names.
_KEY_ALIASES = {"unemebd_hash": "unembed_hash"}
_CONFIG_KEYS = ("base_model_name_or_path", "d_model", "num_hidden_layers", "bias",
                "base_model_revision", "unembed_hash", "lens_type")


@dataclass(frozen=True)
class TunedSource:
    """Where a tuned lens comes from: a local folder, or a Hub repository's subfolder."""

    folder: Path | None = None
    repo: str = DEFAULT_REPO
    repo_type: str = DEFAULT_REPO_TYPE
    revision: str | None = None
    path: str | None = None  # subfolder in the repo; default lens/<model Hub id>
    # How the manifest wrote the folder (relative to the manifest): what documents and pages
    # show, so a published site never carries the build machine's absolute paths.
    label: str | None = None

    def describe(self, model_reference: str) -> str:
        if self.folder is not None:
            return self.label or self.folder.name
        return (f"{self.repo_type} {self.repo}, {self.subfolder(model_reference)}"
                f"{'@' + self.revision if self.revision else ''}")

    def subfolder(self, model_reference: str) -> str:
        return self.path or f"lens/{model_reference}"


def fetch(source: TunedSource, model_reference: str) -> Path:
    """A local folder holding config.json and params.pt (downloaded once when on the Hub)."""
    if source.folder is not None:
        folder = source.folder
        for name in (CONFIG_FILE, PARAMS_FILE):
            if not (folder / name).is_file():
                raise LensReportError(f"tuned lens {folder}: no {name} there (a tuned lens "
                                      "folder holds config.json and params.pt, as "
                                      "`lensreport train-lens` and the tuned-lens library "
                                      "write them)")
        return folder
    try:
        from huggingface_hub import hf_hub_download

        from ..models.references import hub_reachable

        paths = [Path(hf_hub_download(repo_id=source.repo, repo_type=source.repo_type,
                                      revision=source.revision,
                                      local_files_only=not hub_reachable(),
                                      filename=f"{source.subfolder(model_reference)}/{name}"))
                 for name in (CONFIG_FILE, PARAMS_FILE)]
    except Exception as exc:  # noqa: BLE001 - offline, missing lens, gated repo: one line
        raise LensReportError(f"no tuned lens for '{model_reference}' at "
                              f"{source.describe(model_reference)}: {first_line(exc, 200)} "
                              "— check the network (HF_HUB_OFFLINE), or train one with `lensreport "
                              "train-lens` and set lens.tuned to its folder") from None
    return paths[0].parent


def read_config(folder: Path) -> dict[str, Any]:
    """config.json with unknown keys dropped and old misspellings repaired."""
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LensReportError(f"tuned lens {folder}: unreadable {CONFIG_FILE} "
                              f"({first_line(exc, 100)})") from None
    if not isinstance(raw, dict):
        raise LensReportError(f"tuned lens {folder}: {CONFIG_FILE} is not a JSON object")
    config = {}
    for key, value in raw.items():
        key = _KEY_ALIASES.get(key, key)
        if key in _CONFIG_KEYS:
            config[key] = value
        else:
            log.debug("tuned lens %s: ignoring config key %r", folder, key)
    for key in ("d_model", "num_hidden_layers"):
        if not isinstance(config.get(key), int):
            raise LensReportError(f"tuned lens {folder}: {CONFIG_FILE} lacks an integer {key}")
    lens_type = config.get("lens_type", LENS_TYPE)
    if lens_type != LENS_TYPE:
        raise LensReportError(f"tuned lens {folder}: lens_type {lens_type!r} is not supported "
                              f"(only {LENS_TYPE!r})")
    config.setdefault("bias", True)
    return config


def unembed_hash(weight: "torch.Tensor") -> str:
    """The unembedding's fingerprint exactly as the tuned-lens library computes it
    (``Unembed.unembedding_hash``: sha256 of NumPy's one-decimal print of the float32
    matrix), so either tool can tell a lens trained for another model."""
    import hashlib

    import numpy as np

    array = weight.detach().cpu().float().numpy()
    return hashlib.sha256(str.encode(np.array_str(array, precision=1))).hexdigest()


def check_shape(config: dict[str, Any], hidden_size: int, layers: int) -> None:
    """A lens made for another model is refused before any lens work."""
    if config["d_model"] != hidden_size or config["num_hidden_layers"] != layers:
        raise LensReportError(f"the tuned lens is for d_model {config['d_model']} and "
                              f"{config['num_hidden_layers']} layers, but the model has "
                              f"d_model {hidden_size} and {layers} layers; use the lens trained "
                              "for this model")


@dataclass
class Translators:
    """The per-layer affine maps, as tensors on the model's device (float32 math)."""

    weights: list["torch.Tensor"]  # (d, d) each
    biases: list["torch.Tensor | None"]

    @classmethod
    def load(cls, folder: Path, device: Any = "cpu") -> "Translators":
        import torch

        config = read_config(folder)
        try:
            state = torch.load(folder / PARAMS_FILE, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: one line
            raise LensReportError(f"tuned lens {folder}: cannot read {PARAMS_FILE} "
                                  f"({type(exc).__name__})") from None
        layers, width = config["num_hidden_layers"], config["d_model"]
        weights, biases = [], []
        for layer in range(layers):
            weight = state.get(f"{layer}.weight")
            if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (width, width):
                raise LensReportError(f"tuned lens {folder}: {PARAMS_FILE} has no {width}×{width} "
                                      f"'{layer}.weight'")
            bias = state.get(f"{layer}.bias")
            # float32 math whatever params.pt stores (a float16 lens loses the small A_i).
            weights.append(weight.to(device, torch.float32))
            biases.append(None if bias is None else bias.to(device, torch.float32))
        return cls(weights, biases)

    def apply(self, layer: int, hidden: "torch.Tensor") -> "torch.Tensor":
        """h + A h + b, in the translator's precision, returned in the hidden state's dtype."""
        import torch

        weight = self.weights[layer]
        translated = torch.nn.functional.linear(hidden.to(weight.dtype), weight,
                                                self.biases[layer])
        return (hidden.to(weight.dtype) + translated).to(hidden.dtype)


def save(folder: Path, weights: list["torch.Tensor"], biases: list["torch.Tensor"],
         config: dict[str, Any]) -> None:
    """Write a lens in the tuned-lens format (config.json + params.pt)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for layer, (weight, bias) in enumerate(zip(weights, biases)):
        state[f"{layer}.weight"] = weight.detach().cpu().contiguous()
        state[f"{layer}.bias"] = bias.detach().cpu().contiguous()
    full = {"base_model_name_or_path": None, "d_model": None, "num_hidden_layers": None,
            "bias": True, "base_model_revision": None, "unembed_hash": None,
            "lens_type": LENS_TYPE, **config}
    # Each file staged under a name of its own and renamed into place: a reader (a build)
    # never sees half a file, and processes writing one lens at once never share a file.
    replace_file(folder / PARAMS_FILE, lambda path: torch.save(state, path))
    replace_file(folder / CONFIG_FILE, lambda path: path.write_text(json.dumps(full, indent=1),
                                                                   encoding="utf-8"))
