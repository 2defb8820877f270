"""Progress bars on a terminal, silence in CI logs and pipes: tqdm with ``disable=None``."""

from __future__ import annotations

import os
from typing import Any, Iterable

from tqdm import tqdm


def progress(items: Iterable[Any] | None = None, *, total: int | None = None, desc: str,
             unit: str = "it", initial: int = 0) -> tqdm:
    """A bar that draws only when stderr is a terminal (and TQDM_DISABLE is not set: --quiet)."""
    return tqdm(items, total=total, desc=desc, unit=unit, initial=initial, leave=False,
                disable=True if os.environ.get("TQDM_DISABLE") else None, unit_scale=unit == "tok", dynamic_ncols=True)
