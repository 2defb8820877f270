"""`lensreport fit-lens`: fit a lens for one of the manifest's models (Jacobian or tuned)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import LensReportError
from ..manifest.checks import resolve_model
from ..manifest.specs import Manifest, ModelSpec
from .train_lens import corpus_source

log = logging.getLogger("lensreport")


def manifest_model(manifest: Manifest, model_name: str) -> ModelSpec:
    spec = next((m for m in manifest.models if m.name == model_name), None)
    if spec is None:
        raise LensReportError(f"--model {model_name!r}: no such model in {manifest.path}; known: "
                              + ", ".join(m.name for m in manifest.models))
    return spec


def default_jacobian_file(manifest: Manifest, model_name: str) -> Path:
    return manifest.root / "lenses" / model_name / "jacobian_lens.pt"


def fit_jacobian(manifest: Manifest, model_name: str, corpus: str, out: Path | None,
                 settings: Any) -> dict[str, Any]:
    """Fit (or resume) the model's J-lens; a shard writes its running sums to ``out``."""
    from ..lens.fit.jacobian import fit_lens

    spec = manifest_model(manifest, model_name)
    shard, shards = settings.shard
    if out is None:
        out = default_jacobian_file(manifest, model_name)
        if shards > 1:
            out = out.with_name(f"jacobian_lens.shard-{shard}-of-{shards}.pt")
    report = fit_lens(spec.request, resolve_model(manifest, spec), corpus_source(corpus), out,
                      settings)
    if shards > 1:
        log.info("wrote shard %d/%d's sums (%d prompts, %.0f s) to %s; when every shard is "
                 "done: lensreport fit-lens %s --model %s --kind jacobian --merge SHARD... "
                 "--out FILE", shard, shards, report["prompts"], report["seconds"], out,
                 manifest.path, model_name)
    else:
        log.info("wrote %s: a Jacobian lens from %d prompt(s) in %.0f s (%d backward passes "
                 "each); use it with lens: {kinds: [logit, jacobian], jacobian: %s}", out,
                 report["prompts"], report["seconds"], report["passes_per_prompt"],
                 _relative(out, manifest.root))
    return report


def merge_jacobian(manifest: Manifest, model_name: str, parts: list[Path], out: Path | None
                   ) -> dict[str, Any]:
    from ..lens.fit.jacobian import merge

    manifest_model(manifest, model_name)
    out = out or default_jacobian_file(manifest, model_name)
    report = merge(parts, out)
    log.info("wrote %s: %d shard(s), %d prompt(s)", out, report["shards"], report["prompts"])
    return report


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
