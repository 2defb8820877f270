"""`lensreport validate`: the manifest, its references and its prompts, without weights."""

from __future__ import annotations

import logging

from ..manifest.checks import check_prompts
from ..manifest.specs import Manifest
from ..plan import plan

log = logging.getLogger("lensreport")


def validate(manifest: Manifest) -> None:
    """Resolve every model and lens, check every prompt with each tokenizer; raise the first
    problem as a manifest error (file:line)."""
    planned = plan(manifest)
    resolved = {run.model.name: run.resolved for run in planned.runs}
    for model in manifest.models:
        if model.name in resolved:
            log.info("model %s: %s (%s)", model.name, model.reference, resolved[model.name].kind)
    check_prompts(manifest, [(m, resolved[m.name]) for m in manifest.models
                             if m.name in resolved], warn_unreachable=True)
