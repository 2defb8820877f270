"""`lensreport train-lens`: fit a tuned lens for one of the manifest's models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import LensReportError
from ..lens.corpus import CorpusSource
from ..manifest.checks import resolve_model
from ..manifest.specs import Manifest

log = logging.getLogger("lensreport")


def corpus_source(corpus: str) -> CorpusSource:
    """A local .txt/.jsonl file, or a Hugging Face datasets id."""
    path = Path(corpus)
    if path.exists() or path.suffix in (".txt", ".jsonl"):
        return CorpusSource(path=path)
    return CorpusSource(dataset=corpus)


def train(manifest: Manifest, model_name: str, corpus: str, out: Path | None,
          settings: Any) -> tuple[dict[str, Any], Path]:
    """Train the lens (resuming from a checkpoint in the folder); returns (report, folder)."""
    from ..lens.fit.tuned import train_lens

    spec = next((m for m in manifest.models if m.name == model_name), None)
    if spec is None:
        raise LensReportError(f"--model {model_name!r}: no such model in {manifest.path}; known: "
                              + ", ".join(m.name for m in manifest.models))
    folder = out or manifest.root / "lenses" / model_name
    report = train_lens(spec.request, resolve_model(manifest, spec), corpus_source(corpus),
                        folder, settings)
    return report, folder


def print_report(report: dict[str, Any], folder: Path) -> None:
    if not report["held_out"]:
        log.info("wrote %s in %.0f s (%d steps); no held-out tokens, so no before/after table",
                 folder, report["train_seconds"], report["steps"])
        return
    logit, tuned = report["held_out"]["logit"], report["held_out"]["tuned"]
    log.info("wrote %s in %.0f s (%d steps); held-out cross-entropy (nats/token), %d tokens:",
             folder, report["train_seconds"], report["steps"], report["held_out_tokens"])
    log.info("  layer   logit   tuned")
    for layer, (a, b) in enumerate(zip(logit["cross_entropy"], tuned["cross_entropy"])):
        log.info("  %5d  %6.3f  %6.3f", layer, a, b)
