"""The atomic swap: a finished build replaces the previous site whole, or not at all."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second),
                       rename_exchange)
    return result == 0


def publish(staging: Path, site_dir: Path) -> None:
    """Swap a finished build into place. With an atomic exchange there is no moment without a
    site; a build killed before this point leaves the old site untouched."""
    site_dir = site_dir.resolve()
    if not site_dir.exists():
        os.replace(staging, site_dir)
        return
    if _exchange(staging, site_dir):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the previous site
        return
    old = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}.old-", dir=site_dir.parent))
    os.replace(site_dir, old / "site")
    os.replace(staging, site_dir)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_staging(site_dir: Path) -> None:
    """Folders left by a build that was killed (SIGKILL gives no chance to clean up)."""
    site_dir = site_dir.resolve()
    if site_dir.parent.is_dir():
        for leftover in site_dir.parent.glob(f".{site_dir.name}.building-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def staging_folder(site_dir: Path) -> Path:
    """An empty folder next to the target (same file system, so the swap is a rename)."""
    site_dir = site_dir.resolve()
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{site_dir.name}.building-", dir=site_dir.parent))
