"""Content identity: what a result's cache key is made of (weights, lens files, settings).

Keys are content, never places: file digests, resolved Hub commits, settings, and the lens
implementation's version, so a results store moves between machines, clones and CI.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .concurrency import cache_lock
from .files import atomic_write

# 2: tracked_probs stored as float16 (base64). 3: every numeric field a packed array
# (documents.pack_grid; tracked_probs at 4 significant digits). Schemas 1 and 2 stay readable.
SCHEMA_VERSION = 3
READABLE_SCHEMAS = (1, 2, 3)
# What cache keys are made of changed last at schema 1: a new schema alone recomputes nothing.
KEY_SCHEMA = 1
# Bump when the lens computation changes its numbers, so cached results are recomputed
# (library versions are recorded in each document, not keyed, so caches move between setups).
# 5: prompt documents carry the direct logit attribution (decomposition)
# 6: decompositions of blocks with one or three parts (state-space, hybrid), OPT and Llama-4
# 7: RWKV and Inkling decompose (constants on the stream between blocks and around the final
#    norm carried)
LENS_IMPLEMENTATION = 7


def cache_home() -> Path:
    """Where lensreport keeps converted weights and digests: $LENSREPORT_CACHE or
    ~/.cache/lensreport."""
    env = os.environ.get("LENSREPORT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lensreport"


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
    known = _read_memo(memo_path).get(where)
    if known:
        return known
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    value = f"sha256:{digest.hexdigest()}"
    try:
        # Read, add and write under the memo's lock: processes digesting other files at
        # once keep each other's entries.
        with cache_lock(memo_path, None):
            memo = _read_memo(memo_path)
            memo[where] = value
            atomic_write(memo_path, json.dumps(memo, sort_keys=True).encode("utf-8"))
    except OSError:
        pass  # a read-only cache home only costs a re-read next time
    return value


def _read_memo(path: Path) -> dict[str, str]:
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def cache_key(material: dict[str, Any]) -> str:
    blob = json.dumps({"schema": KEY_SCHEMA, "lens": LENS_IMPLEMENTATION, **material},
                      sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()
