"""The lens registry: every lens kind by name. Adding a kind = one module + one ``register``.

A manifest's ``lens.kinds`` names registered lenses; documents record the name; pages look
up the label and line style here. Nothing else in lensreport compares lens names.
"""

from __future__ import annotations

from ...errors import LensReportError
from ...results.validation import LENS_KIND
from .base import Lens, LensSettingError
from .jacobian import JacobianLens
from .logit import LogitLens
from .patchscope import PatchscopeLens
from .raw import RawLens
from .tuned import TunedLens

_REGISTRY: dict[str, type[Lens]] = {}


def register(cls: type[Lens]) -> type[Lens]:
    """Make a lens kind known to manifests, the engine and pages (usable as a decorator).
    Its name becomes a file-name suffix, so it is held to the rule saved documents are."""
    if not LENS_KIND.fullmatch(cls.name):
        raise ValueError(f"lens kind name {cls.name!r} must match {LENS_KIND.pattern}")
    _REGISTRY[cls.name] = cls
    return cls


def lens_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def lens_class(name: str) -> type[Lens]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LensReportError(f"unknown lens kind {name!r}; known: "
                              + ", ".join(_REGISTRY)) from None


def lens_style(name: str) -> dict[str, str]:
    """How pages show a lens: its label and line dash (a saved document's lens may be a kind
    this installation does not have; it is shown by its name)."""
    cls = _REGISTRY.get(name)
    if cls is None:
        return {"kind": name, "label": f"{name} lens", "dash": "dot"}
    return {"kind": name, "label": cls.label, "dash": cls.line_dash}


for _kind in (LogitLens, RawLens, TunedLens, JacobianLens, PatchscopeLens):
    register(_kind)

__all__ = ["Lens", "LensSettingError", "LogitLens", "RawLens", "TunedLens", "JacobianLens",
           "PatchscopeLens",
           "register", "lens_names", "lens_class", "lens_style"]
