"""`lensreport gh-deploy`: commit the built site to the gh-pages branch and push it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .._version import __version__
from ..errors import LensReportError


def _git(folder: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)
    if result.returncode != 0:
        raise LensReportError(f"git {' '.join(args)} failed: "
                              f"{((result.stderr or result.stdout).strip().splitlines() or ['no output'])[-1]}")
    return result.stdout.strip()


def check_repository(repository: Path, remote: str, push: bool) -> Path:
    """The git top-level of ``repository``; fails before any build if git or the remote is
    missing."""
    try:
        top = Path(_git(repository, "rev-parse", "--show-toplevel"))
    except (LensReportError, FileNotFoundError):
        raise LensReportError(f"{repository.resolve()} is not inside a git repository (or git "
                              "is not installed); run gh-deploy from the repository GitHub "
                              "Pages serves") from None
    if push and remote not in _git(top, "remote").split():
        raise LensReportError(f"git remote '{remote}' does not exist in {top}; add it with "
                              f"`git remote add {remote} URL` or use --remote / --no-push")
    return top


def deploy(site_dir: Path, top: Path, *, remote: str = "origin", branch: str = "gh-pages",
           message: str | None = None, push: bool = True) -> None:
    """Publish ``site_dir`` (an absolute path) as the whole content of ``branch`` of the
    repository at ``top`` (ghp-import, like MkDocs)."""
    import ghp_import

    try:
        sha = _git(top, "rev-parse", "--short", "HEAD")
    except LensReportError:
        sha = "(no commit)"
    text = message or f"Deployed {sha} with lensreport {__version__}"
    cwd = Path.cwd()
    try:
        os.chdir(top)  # ghp-import works on the repository of the current directory
        ghp_import.ghp_import(str(site_dir), mesg=text, remote=remote, branch=branch,
                              push=push, force=True, nojekyll=True)
    except ghp_import.GhpError as exc:
        raise LensReportError(f"publishing to {branch} failed: {exc.message}") from None
    finally:
        os.chdir(cwd)
