"""The build: manifest -> plan of runs -> (cached or computed) LensResults -> site.

A model is loaded only when at least one of its runs is missing from the results cache, and
then only once for all its prompts. Rendering reads results only, so a template change
rebuilds the site without importing torch.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import models as model_refs
from .errors import LensReportError, ManifestError
from .manifest import Manifest, ModelSpec, PromptSpec
from .results import ResultsCache, cache_key, restamp

log = logging.getLogger("lensreport")


@dataclass(frozen=True)
class Run:
    model: ModelSpec
    prompt: PromptSpec
    resolved: model_refs.ResolvedModel
    key: str


@dataclass
class BuildSummary:
    computed: list[tuple[str, str]] = field(default_factory=list)
    cached: list[tuple[str, str]] = field(default_factory=list)
    loaded_models: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    site_dir: Path | None = None
    seconds: float = 0.0


def check_selection(manifest: Manifest, only_models: tuple[str, ...],
                    only_prompts: tuple[str, ...]) -> None:
    """--only-model / --only-prompt must name things in the manifest."""
    for names, known, what in ((only_models, manifest.models, "model"),
                               (only_prompts, manifest.prompts, "prompt")):
        for name in names:
            if name not in {item.name for item in known}:
                raise ManifestError(manifest.path, None,
                                    f"--only-{what} {name!r}: no such {what}; known: "
                                    + ", ".join(item.name for item in known))


def plan(manifest: Manifest) -> list[Run]:
    """One run per (model, prompt), each with the content key of what changes its numbers."""
    runs = []
    for model in manifest.models:
        resolved = model_refs.resolve(model, manifest.path)
        device = model_refs.device_type(model.device)
        for prompt in manifest.prompts:
            # Content, never places: weight digests or a Hub commit, the device type, the
            # lens settings and the prompt. Library versions are recorded in the document
            # (generator), not keyed: results.LENS_IMPLEMENTATION changes when numbers do.
            key = cache_key({
                "model": resolved.identity, "dtype": model.dtype, "device": device,
                "lens_kind": model.lens.kind, "top_k": model.lens.top_k,
                "final_norm": model.final_norm, "unembedding": model.unembedding,
                "text": prompt.text, "target": prompt.target})
            runs.append(Run(model, prompt, resolved, key))
    return runs


def _progress(items: Iterable[Any], description: str, total: int) -> Iterator[Any]:
    """A progress bar on a terminal; silent in CI logs and pipes."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=description, unit="prompt", total=total, leave=False)
    else:
        yield from items


def compute_results(manifest: Manifest, runs: list[Run], cache: ResultsCache, clean: bool,
                    summary: BuildSummary) -> dict[tuple[str, str], dict[str, Any]]:
    """Every run's document: from the cache, or computed (one model load per model)."""
    documents: dict[tuple[str, str], dict[str, Any]] = {}
    missing: dict[str, list[Run]] = {}
    for run in runs:
        document = None if clean else cache.get(run.key)
        if document is None:
            missing.setdefault(run.model.name, []).append(run)
        else:
            documents[run.model.name, run.prompt.name] = document
            summary.cached.append((run.model.name, run.prompt.name))
    for model_name, model_runs in missing.items():
        for run, document in _compute_model(manifest, model_runs, summary):
            cache.put(run.key, document)
            documents[run.model.name, run.prompt.name] = document
            summary.computed.append((run.model.name, run.prompt.name))
    for run in runs:
        restamp(documents[run.model.name, run.prompt.name], run.model.name, run.model.slug,
                run.prompt.name, run.prompt.slug)
    return documents


def _compute_model(manifest: Manifest, runs: list[Run], summary: BuildSummary
                   ) -> Iterator[tuple[Run, dict[str, Any]]]:
    from .engine import ModelSession

    spec = runs[0].model
    started = time.perf_counter()
    log.info("loading model '%s' (%s)", spec.name, spec.reference)
    session = ModelSession.open(spec, runs[0].resolved)
    summary.loaded_models.append(spec.name)
    log.info("loaded '%s' in %.1f s: %s, %d layers, vocab %d", spec.name,
             time.perf_counter() - started, session.facts["architecture"],
             session.facts["num_layers"], session.facts["vocab_size"])
    try:
        encoded = [session.prepare(run.prompt, manifest.path) for run in runs]
        batches = session.hidden_states(encoded)
        for index, hidden, last_hidden in _progress(batches, f"lens {spec.name}", len(runs)):
            run = runs[index]
            yield run, session.run(run.prompt, encoded[index], run.key, hidden, last_hidden)
    finally:
        session.close()


def add_saved_results(manifest: Manifest, documents: dict[tuple[str, str], dict[str, Any]]
                      ) -> Manifest:
    """Put the manifest's `results:` files (saved with run_lens, or by another build) on the
    site: their models and prompts join the manifest's, by name."""
    from dataclasses import replace

    from .api import _prompt_from_document, _spec_from_document, read_document
    from .manifest import unique_slugs

    models = {m.name: m for m in manifest.models}
    prompts = {p.name: p for p in manifest.prompts}
    for path in manifest.result_files:
        try:
            document = read_document(path)
        except LensReportError as exc:
            raise ManifestError(manifest.path, manifest.results_line, str(exc)) from None
        model, prompt = _spec_from_document(document), _prompt_from_document(document)
        if (model.name, prompt.name) in documents:
            raise ManifestError(manifest.path, manifest.results_line,
                                f"{path}: model '{model.name}' on prompt '{prompt.name}' is "
                                "already on the site; rename it, or drop one of the two")
        if prompt.name in prompts and prompts[prompt.name].text != prompt.text:
            raise ManifestError(manifest.path, manifest.results_line,
                                f"{path}: prompt '{prompt.name}' has another text than the "
                                "manifest's prompt of that name; rename one of them")
        models.setdefault(model.name, model)
        prompts.setdefault(prompt.name, prompt)
        documents[model.name, prompt.name] = document
    model_slugs = unique_slugs(list(models))
    prompt_slugs = unique_slugs(list(prompts))
    merged_models = tuple(replace(m, slug=slug) for m, slug in zip(models.values(), model_slugs))
    merged_prompts = tuple(replace(p, slug=slug)
                           for p, slug in zip(prompts.values(), prompt_slugs))
    for (model_name, prompt_name), document in documents.items():
        model = next(m for m in merged_models if m.name == model_name)
        prompt = next(p for p in merged_prompts if p.name == prompt_name)
        restamp(document, model.name, model.slug, prompt.name, prompt.slug)
    return replace(manifest, models=merged_models, prompts=merged_prompts)


class _WarningCounter(logging.Handler):
    """Counts warnings during a build, as MkDocs does, so --strict can fail on any of them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def default_site_dir(manifest: Manifest) -> Path:
    return manifest.site_dir or manifest.root / "site"


def default_cache_dir(manifest: Manifest) -> Path:
    return manifest.cache_dir or manifest.root / ".lensreport-cache"


def run_build(manifest: Manifest, site_dir: Path | None = None, *, clean: bool = False,
              strict: bool = False, only_models: tuple[str, ...] = (),
              only_prompts: tuple[str, ...] = (), live_reload: bool = False) -> BuildSummary:
    """Build the whole site. The previous site is replaced only if everything succeeded."""
    from .site import publish, remove_stale_staging, render_site, staging_folder

    started = time.perf_counter()
    site_dir = site_dir or default_site_dir(manifest)
    summary = BuildSummary(site_dir=site_dir)
    counter = _WarningCounter()
    log.addHandler(counter)
    try:
        check_selection(manifest, only_models, only_prompts)
        cache = ResultsCache(default_cache_dir(manifest))
        runs = plan(manifest)
        selected = [run for run in runs
                    if (not only_models or run.model.name in only_models)
                    and (not only_prompts or run.prompt.name in only_prompts)]
        documents = compute_results(manifest, selected, cache, clean, summary)
        for run in runs:  # runs outside --only-*: shown if their results are cached
            if run not in selected and (document := cache.get(run.key)) is not None:
                documents[run.model.name, run.prompt.name] = restamp(
                    document, run.model.name, run.model.slug, run.prompt.name, run.prompt.slug)
        for run in runs:
            for message in documents.get((run.model.name, run.prompt.name), {}).get(
                    "warnings", []):
                log.warning("%s", message)
        manifest = add_saved_results(manifest, documents)
        summary.warnings = list(counter.messages)
        if strict and summary.warnings:
            raise LensReportError(f"--strict: the build had {len(summary.warnings)} warning(s); "
                                  "the site was not written")
        remove_stale_staging(site_dir)
        staging = staging_folder(site_dir)
        try:
            render_site(manifest, documents, staging, live_reload=live_reload)
            publish(staging, site_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        log.removeHandler(counter)
    summary.seconds = time.perf_counter() - started
    return summary
