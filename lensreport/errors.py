"""Errors the user should see as one clear line (never a traceback)."""

from __future__ import annotations

from .text import visible


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line of text (its type's name when it has none), cut to ``limit``
    and shown under the one rule for text (text.py: no control or bidi character, and no
    U+2028 or U+2029, which a terminal breaks a line at)."""
    lines = str(exc).strip().split("\n")
    return visible(lines[0][:limit]) if lines[0] else type(exc).__name__


class LensReportError(Exception):
    """A failure caused by the user's input or environment; exit code 1."""

    exit_code = 1


class ManifestError(LensReportError):
    """A problem in the manifest; always points at file:line. Exit code 2."""

    exit_code = 2

    def __init__(self, path: object, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}")


class ManifestErrors(LensReportError):
    """Several manifest problems, reported together (one line each) before anything runs;
    at most SHOWN of them, then how many more."""

    exit_code = 2
    SHOWN = 10

    def __init__(self, errors: list[ManifestError]) -> None:
        self.errors = errors
        lines = [str(e) for e in errors[:self.SHOWN]]
        if len(errors) > self.SHOWN:
            lines.append(f"… and {len(errors) - self.SHOWN} more problem(s) in "
                         f"{errors[0].path}")
        super().__init__("\n".join(lines))


class UsageError(LensReportError):
    """Options that do not go together; exit code 2, like click's own usage errors."""

    exit_code = 2
