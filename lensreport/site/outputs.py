"""The one place a build writes the site: every file is planned, checked, then written.

render_site lists every output (its path and who writes it) before anything is written;
:func:`check_outputs` refuses the whole list when a path leaves the site folder, when two
outputs share a file, or when one output's file is another's folder. :class:`SiteFiles` then
writes only planned paths, each once, inside its folder. Slugs cannot spell each other's
derived names (slugs.py), so a collision here is a bug or a hostile input, never a silent
overwrite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from ..errors import LensReportError


@dataclass(frozen=True)
class Output:
    """One file of the site: ``path`` (relative, '/'-separated), ``what`` writes it (for
    errors), and ``content`` made when it is written (pages render late, one at a time)."""

    path: str
    what: str
    content: Callable[[], str | bytes]


def check_path(path: str) -> str:
    """``path`` when it is a plain relative path that stays inside the site; else an error."""
    parts = PurePosixPath(path).parts
    if (not path or path.startswith("/") or "\\" in path or "\0" in path
            or any(part in ("", ".", "..") for part in parts)
            or path != "/".join(parts)):
        raise LensReportError(f"refusing to write {path!r}: not a path inside the site folder")
    return path


def check_outputs(planned: Iterable[tuple[str, str]]) -> set[str]:
    """The planned paths, once each checked: inside the site, no two outputs on one file, no
    file where another output needs a folder. Raises before anything is written."""
    owners: dict[str, str] = {}
    for path, what in planned:
        check_path(path)
        if path in owners:
            raise LensReportError(f"two outputs would write the same file {path}: "
                                  f"{owners[path]} and {what}; rename one of them")
        owners[path] = what
    for path, what in owners.items():
        for parent in PurePosixPath(path).parents:
            folder = str(parent)
            if folder in owners:
                raise LensReportError(f"{owners[folder]} writes the file {folder}, where "
                                      f"{what} needs a folder ({path}); rename one of them")
    return set(owners)


class SiteFiles:
    """Writes into one site folder: only planned paths, each once, never outside it."""

    def __init__(self, root: Path, planned: set[str]) -> None:
        self.root = root.resolve()
        self.planned = planned
        self.written: set[str] = set()

    def write(self, path: str, data: str | bytes) -> None:
        check_path(path)
        if path not in self.planned or path in self.written:
            raise LensReportError(f"refusing to write {path}: "
                                  + ("written twice" if path in self.written
                                     else "not among the planned outputs"))
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):  # a symlinked folder inside the site
            raise LensReportError(f"refusing to write {path}: it leads outside the site folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        self.written.add(path)
