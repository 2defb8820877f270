"""lensreport: logit-lens reports for Hugging Face causal language models, as a static site.

Notebook API: :func:`run_lens`, :func:`compare`, :class:`LensResult` (see lensreport.api).
"""

from typing import Any

from ._version import __version__

__all__ = ["run_lens", "compare", "LensResult", "__version__"]


def __getattr__(name: str) -> Any:
    """The API is imported on first use, so `lensreport` on the command line stays light."""
    if name in ("run_lens", "compare", "LensResult"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'lensreport' has no attribute {name!r}")
