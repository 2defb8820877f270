"""Atomic file writes: readers never see half a file."""

from __future__ import annotations

import os
from pathlib import Path

from .concurrency import replace_file


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file of this writer's own beside ``path``, flushed to
    disk, and rename it over ``path`` (concurrency.replace_file): readers never see half a
    file."""
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())

    replace_file(path, write)
