"""`lensreport new`: a commented starter manifest."""

from __future__ import annotations

from pathlib import Path

from ..errors import LensReportError
from ..site.pages import builtin_templates


def write_starter(directory: Path) -> Path:
    """Write DIRECTORY/prompts.yaml; never overwrite a user's file."""
    path = directory / "prompts.yaml"
    if path.exists():
        raise LensReportError(f"{path} already exists; edit it, or pick another folder")
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text((builtin_templates() / "starter.yaml").read_text(encoding="utf-8"),
                    encoding="utf-8")
    return path
