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
from .manifest import CorpusSpec, Manifest, ModelSpec, PromptSpec
from .results import cache_key, restamp
from .store import ResultsStore

log = logging.getLogger("lensreport")


DocumentKey = tuple[str, str, str]  # (model name, prompt name, lens kind)


@dataclass(frozen=True)
class Run:
    """One (model, prompt, lens): one cached document and one figure (or lens of a figure)."""

    model: ModelSpec
    prompt: PromptSpec
    lens: str
    resolved: model_refs.ResolvedModel
    key: str

    @property
    def names(self) -> DocumentKey:
        return self.model.name, self.prompt.name, self.lens


@dataclass(frozen=True)
class CorpusRun:
    """One (corpus, model, lens): one cached curves document."""

    corpus: CorpusSpec
    model: ModelSpec
    lens: str
    resolved: model_refs.ResolvedModel
    key: str

    @property
    def names(self) -> DocumentKey:
        return self.corpus.name, self.model.name, self.lens


@dataclass
class BuildSummary:
    computed: list[DocumentKey] = field(default_factory=list)
    cached: list[DocumentKey] = field(default_factory=list)
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


def tuned_identity(model: ModelSpec, resolved: model_refs.ResolvedModel,
                   manifest: Manifest) -> str:
    """The content of a model's tuned lens (fetched from the Hub once when it lives there)."""
    from . import tuned

    source = model.lens.tuned
    if source is None:
        if resolved.kind != "hub":
            raise ManifestError(manifest.path, model.line,
                                f"model '{model.name}'.lens.tuned: the tuned lens needs a "
                                "source: set lens.tuned to a lens folder (e.g. one written by "
                                "`lensreport train-lens`); published lenses are found by Hub "
                                "model id")
        source = tuned.TunedSource()
    try:
        folder = tuned.fetch(source, model.reference)
    except LensReportError as exc:
        if source.folder is None:
            raise
        raise ManifestError(manifest.path, model.line, f"model '{model.name}'.lens.tuned: "
                            f"{exc} — train one with `lensreport train-lens {manifest.path.name}"
                            f" --model {model.name} --corpus FILE`") from None
    return "|".join(model_refs.file_digest(folder / name)
                    for name in (tuned.CONFIG_FILE, tuned.PARAMS_FILE))


def plan(manifest: Manifest) -> list[Run]:
    """One run per (model, prompt, lens), each keyed by the content that sets its numbers."""
    return plan_all(manifest)[0]


def plan_all(manifest: Manifest) -> tuple[list[Run], list[CorpusRun]]:
    """Prompt runs and corpus runs, each keyed by the content that sets its numbers."""
    from .corpus import digest

    runs, corpus_runs = [], []
    corpus_digests = {corpus.name: digest(corpus.source) for corpus in manifest.corpora}
    for model in manifest.models:
        resolved = model_refs.resolve(model, manifest.path)
        device = model_refs.device_type(model.device, model.device_map)
        lenses = {kind: tuned_identity(model, resolved, manifest) if kind == "tuned" else None
                  for kind in model.lens.kinds}
        for corpus in manifest.corpora:
            for kind, lens_identity in lenses.items():
                key = cache_key({
                    "model": resolved.identity, "dtype": model.dtype, "device": device,
                    "lens_kind": kind, "tuned": lens_identity,
                    "final_norm": model.final_norm, "unembedding": model.unembedding,
                    "corpus": corpus_digests[corpus.name], "max_tokens": corpus.max_tokens,
                    "context": corpus.context})
                corpus_runs.append(CorpusRun(corpus, model, kind, resolved, key))
        for prompt in manifest.prompts:
            for kind, lens_identity in lenses.items():
                # Content, never places: weight digests or a Hub commit, the device type,
                # the lens (and a tuned lens's files) and the prompt. Library versions are
                # recorded in the document, not keyed: results.LENS_IMPLEMENTATION changes
                # when the numbers do.
                key = cache_key({
                    "model": resolved.identity, "dtype": model.dtype, "device": device,
                    "lens_kind": kind, "tuned": lens_identity, "top_k": model.lens.top_k,
                    "final_norm": model.final_norm, "unembedding": model.unembedding,
                    "text": prompt.text, "target": prompt.target})
                runs.append(Run(model, prompt, kind, resolved, key))
    return runs, corpus_runs


def _progress(items: Iterable[Any], description: str, total: int) -> Iterator[Any]:
    """A progress bar on a terminal; silent in CI logs and pipes."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=description, unit="prompt", total=total, leave=False)
    else:
        yield from items


AnyRun = Run | CorpusRun


def compute_results(manifest: Manifest, runs: list[AnyRun], cache: ResultsStore, clean: bool,
                    summary: BuildSummary) -> list[dict[str, Any]]:
    """Every run's document, in the order of ``runs`` (prompt and corpus runs alike): from
    the cache, or computed with one model load per model."""
    documents: list[dict[str, Any] | None] = []
    missing: dict[str, list[tuple[int, AnyRun]]] = {}
    for index, run in enumerate(runs):
        document = None if clean else cache.get(run.key)
        documents.append(document)
        if document is None:
            missing.setdefault(run.model.name, []).append((index, run))
        else:
            summary.cached.append(run.names)
    # Prompts too long, targets not in a vocabulary: found with the tokenizers alone, before
    # any weights load.
    model_refs.check_prompts(manifest, [(group[0][1].model, group[0][1].resolved)
                                        for group in missing.values()])
    for group in missing.values():
        positions = {id(run): index for index, run in group}
        for run, document in _compute_model(manifest, [run for _, run in group], summary):
            cache.put(run.key, document)
            documents[positions[id(run)]] = document
            summary.computed.append(run.names)
    return [_restamp(run, document) for run, document in zip(runs, documents)]


def _restamp(run: AnyRun, document: dict[str, Any]) -> dict[str, Any]:
    if isinstance(run, CorpusRun):
        document["model"]["name"], document["model"]["slug"] = run.model.name, run.model.slug
        document["corpus"]["name"], document["corpus"]["slug"] = run.corpus.name, run.corpus.slug
        return document
    return restamp(document, run.model.name, run.model.slug, run.prompt.name, run.prompt.slug)


def _compute_model(manifest: Manifest, runs: list[AnyRun], summary: BuildSummary
                   ) -> Iterator[tuple[AnyRun, dict[str, Any]]]:
    """Load the model once; one forward pass per prompt or corpus window serves all its
    missing lenses."""
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
        if any(run.lens == "tuned" for run in runs):
            session.load_tuned_lens(manifest.path)  # a mismatched lens fails before any work
        prompts: dict[str, list[Run]] = {}
        corpora: dict[str, list[CorpusRun]] = {}
        for run in runs:
            if isinstance(run, CorpusRun):
                corpora.setdefault(run.corpus.name, []).append(run)
            else:
                prompts.setdefault(run.prompt.name, []).append(run)
        groups = list(prompts.values())
        encoded = [session.prepare(group[0].prompt, manifest.path) for group in groups]
        batches = session.hidden_states(encoded)
        for index, hidden, last_hidden in _progress(batches, f"lens {spec.name}", len(groups)):
            for run in groups[index]:
                yield run, session.run(run.prompt, encoded[index], run.key, hidden, last_hidden,
                                       run.lens)
        for corpus_runs in corpora.values():
            yield from session.run_corpus(corpus_runs)
    finally:
        session.close()


def add_saved_results(manifest: Manifest, documents: dict[DocumentKey, dict[str, Any]]
                      ) -> Manifest:
    """Put the manifest's `results:` files (saved with run_lens, or by another build) on the
    site: their models and prompts join the manifest's, by name."""
    from dataclasses import replace

    from .api import prompt_from_document, read_document, spec_from_document
    from .manifest import LensSettings, unique_slugs

    models = {m.name: m for m in manifest.models}
    prompts = {p.name: p for p in manifest.prompts}
    for path in manifest.result_files:
        try:
            document = read_document(path)
        except LensReportError as exc:
            raise ManifestError(manifest.path, manifest.results_line, str(exc)) from None
        model, prompt = spec_from_document(document), prompt_from_document(document)
        names = (model.name, prompt.name, model.lens.kind)
        if names in documents:
            raise ManifestError(manifest.path, manifest.results_line,
                                f"{path}: model '{model.name}' on prompt '{prompt.name}' "
                                f"({model.lens.kind} lens) is already on the site; rename it, "
                                "or drop one of the two")
        if prompt.name in prompts and prompts[prompt.name].text != prompt.text:
            raise ManifestError(manifest.path, manifest.results_line,
                                f"{path}: prompt '{prompt.name}' has another text than the "
                                "manifest's prompt of that name; rename one of them")
        known = models.setdefault(model.name, model)
        if model.lens.kind not in known.lens.kinds:
            models[model.name] = replace(known, lens=LensSettings(
                known.lens.kinds + (model.lens.kind,), known.lens.top_k, known.lens.tuned))
        prompts.setdefault(prompt.name, prompt)
        documents[names] = document
    model_slugs = unique_slugs(list(models))
    prompt_slugs = unique_slugs(list(prompts))
    merged_models = tuple(replace(m, slug=slug) for m, slug in zip(models.values(), model_slugs))
    merged_prompts = tuple(replace(p, slug=slug)
                           for p, slug in zip(prompts.values(), prompt_slugs))
    by_name = {m.name: m for m in merged_models}
    prompt_by_name = {p.name: p for p in merged_prompts}
    for (model_name, prompt_name, _), document in documents.items():
        model, prompt = by_name[model_name], prompt_by_name[prompt_name]
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


def default_cache_dir(manifest: Manifest) -> Path | str:
    return manifest.cache_dir or manifest.root / ".lensreport-cache"


def shard_runs(runs: list[AnyRun], shard: int, shards: int) -> list[AnyRun]:
    """Shard ``shard`` (1-based) of ``shards``: the same answer on every machine.

    With at least as many models as shards, whole models go to the least-loaded shard
    (largest first), so each model loads once; otherwise the runs, in model order, are cut
    into contiguous blocks, so a model loads on as few shards as possible.
    """
    by_model: dict[str, list[AnyRun]] = {}
    for run in runs:
        by_model.setdefault(run.model.name, []).append(run)
    if len(by_model) >= shards:
        loads = [0] * shards
        owner: dict[str, int] = {}
        for name in sorted(by_model, key=lambda n: (-len(by_model[n]), list(by_model).index(n))):
            target = min(range(shards), key=lambda i: (loads[i], i))
            owner[name] = target
            loads[target] += len(by_model[name])
        return [run for run in runs if owner[run.model.name] == shard - 1]
    ordered = [run for group in by_model.values() for run in group]
    start = len(ordered) * (shard - 1) // shards
    return ordered[start:len(ordered) * shard // shards]


def compute_shard(manifest: Manifest, shard: int, shards: int, *, clean: bool = False
                  ) -> BuildSummary:
    """Compute this shard's share of the runs into the results store; render nothing."""
    started = time.perf_counter()
    summary = BuildSummary()
    store = ResultsStore(default_cache_dir(manifest))
    runs, corpus_runs = plan_all(manifest)
    mine = shard_runs([*runs, *corpus_runs], shard, shards)
    log.info("shard %d/%d: %d of %d run(s)", shard, shards, len(mine),
             len(runs) + len(corpus_runs))
    compute_results(manifest, mine, store, clean, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def run_build(manifest: Manifest, site_dir: Path | None = None, *, clean: bool = False,
              strict: bool = False, only_models: tuple[str, ...] = (),
              only_prompts: tuple[str, ...] = (), live_reload: bool = False,
              compute: bool = True) -> BuildSummary:
    """Build the whole site. The previous site is replaced only if everything succeeded.

    ``compute=False`` renders from the results store alone and fails, listing them, when
    runs are missing (the last step after sharded computation).
    """
    from .site import publish, remove_stale_staging, render_site, staging_folder

    started = time.perf_counter()
    site_dir = site_dir or default_site_dir(manifest)
    summary = BuildSummary(site_dir=site_dir)
    counter = _WarningCounter()
    log.addHandler(counter)
    try:
        check_selection(manifest, only_models, only_prompts)
        store = ResultsStore(default_cache_dir(manifest))
        runs, corpus_runs = plan_all(manifest)
        if not compute:
            _require_stored([*runs, *corpus_runs], store)
        chosen = [run for run in [*runs, *corpus_runs]
                  if (not only_models or run.model.name in only_models)
                  and (not only_prompts or (isinstance(run, Run)
                                            and run.prompt.name in only_prompts))]
        computed = compute_results(manifest, chosen, store, clean, summary)
        # Prompt documents by (model, prompt, lens), curves by (corpus, model, lens): two
        # tables, so a corpus named like a model can never take a prompt's place.
        documents: dict[DocumentKey, dict[str, Any]] = {}
        corpus_documents: dict[DocumentKey, dict[str, Any]] = {}
        found = list(zip(chosen, computed))
        for run in [*runs, *corpus_runs]:  # outside --only-*: shown if their results are cached
            if run not in chosen and (document := store.get(run.key)) is not None:
                found.append((run, _restamp(run, document)))
        for run, document in found:
            table = corpus_documents if isinstance(run, CorpusRun) else documents
            table[run.names] = document
        for run in runs:
            if run.lens == run.model.lens.kind:  # a prompt's warnings once, not per lens
                for message in documents.get(run.names, {}).get("warnings", []):
                    log.warning("%s", message)
        manifest = add_saved_results(manifest, documents)
        summary.warnings = list(counter.messages)
        if strict and summary.warnings:
            raise LensReportError(f"--strict: the build had {len(summary.warnings)} warning(s); "
                                  "the site was not written")
        remove_stale_staging(site_dir)
        staging = staging_folder(site_dir)
        try:
            render_site(manifest, documents, staging, live_reload=live_reload,
                        corpus_documents=corpus_documents)
            publish(staging, site_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        log.removeHandler(counter)
    summary.seconds = time.perf_counter() - started
    return summary


def _require_stored(runs: list[AnyRun], store: ResultsStore) -> None:
    """--no-compute: every run must be in the store; list the missing ones otherwise."""
    missing = [run for run in runs if store.get(run.key) is None]
    if not missing:
        return
    shown = [f"({run.model.name}, {run.prompt.name if isinstance(run, Run) else 'corpus ' + run.corpus.name}, {run.lens} lens)"
             for run in missing[:10]]
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    raise LensReportError(f"--no-compute: {len(missing)} run(s) are not in the results store "
                          f"{store.location}: {', '.join(shown)}{more}; run the shards "
                          "(build --shard K/N) first")
