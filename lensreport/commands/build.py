"""`lensreport build`: manifest -> plan of runs -> (stored or computed) documents -> site.

A model is loaded only when at least one of its runs is missing from the results store, and
then only once for all its prompts, corpora and lenses. Rendering reads documents only, so
a template change rebuilds the site without importing torch.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from ..errors import LensReportError, ManifestError
from ..manifest.checks import check_prompts, prompt_error
from ..manifest.specs import LensSettings, Manifest, ModelSpec, PromptSpec
from ..plan import CorpusKey, CorpusRun, PromptKey, PromptRun, Run, check_selection, plan, \
    shard_runs
from ..progress import progress
from ..results.concurrency import Claim
from ..results.documents import read_document, restamp
from ..results.store import ResultsStore
from ..slugs import RESERVED_MODEL_SLUGS, slugify, unique_slugs
from ..text import visible

log = logging.getLogger("lensreport")


@dataclass
class BuildSummary:
    computed: list[PromptKey | CorpusKey] = field(default_factory=list)
    cached: list[PromptKey | CorpusKey] = field(default_factory=list)
    loaded_models: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    site_dir: Path | None = None
    seconds: float = 0.0


def compute_results(manifest: Manifest, runs: list[Run], store: ResultsStore, clean: bool,
                    summary: BuildSummary) -> list[dict[str, Any]]:
    """Every run's document, in the order of ``runs`` (prompt and corpus runs alike): from
    the store, or computed with one model load per model.

    Processes sharing a store (a build and its shards, started together) compute each run
    once: a run is claimed in the store before its model loads; runs other processes hold
    are waited for once this process's own are done, then read from the store — or claimed
    and computed here, if their holder stopped without writing them (see results/store.py;
    a store at a non-local URL cannot claim, so there a run may be computed twice).
    """
    documents: list[dict[str, Any] | None] = []
    missing: dict[str, list[tuple[int, Run]]] = {}
    uncached = {run.model.name for run in runs if not run.resolved.cacheable}
    for name in uncached:
        log.warning("model '%s': the Hub commit of its revision is unknown here (offline, no "
                    "local ref), so its results are computed and not cached", name)
    for index, run in enumerate(runs):
        document = None if clean or not run.resolved.cacheable else store.get(run.key)
        documents.append(document)
        if document is None:
            missing.setdefault(run.model.name, []).append((index, run))
        else:
            summary.cached.append(run.names)
    # Prompts too long, targets not in a vocabulary: found with the tokenizers alone, before
    # any weights load.
    check_prompts(manifest, [(group[0][1].model, group[0][1].resolved)
                             for group in missing.values()])
    while missing:
        held: list[tuple[int, Run]] = []  # claimed by other processes
        for group in missing.values():
            held += _compute_claimed(manifest, group, store, clean, documents, summary)
        if held:
            log.info("waiting for %d run(s) that other processes are computing", len(held))
        missing = {}
        for index, run in held:
            store.wait(run.key)
            document = store.get(run.key)
            if document is None:  # its holder stopped without writing it: computed here
                missing.setdefault(run.model.name, []).append((index, run))
            else:
                documents[index] = document
                summary.cached.append(run.names)
    return [_restamp(run, document) for run, document in zip(runs, documents)]


def _compute_claimed(manifest: Manifest, group: list[tuple[int, Run]], store: ResultsStore,
                     clean: bool, documents: list[dict[str, Any] | None],
                     summary: BuildSummary) -> list[tuple[int, Run]]:
    """Claim one model's missing runs and compute those claimed (one model load); returns
    the runs other processes hold. Every claim is released before this returns, so a
    process never waits for another while holding a run (no two wait on each other)."""
    claims: dict[int, Claim] = {}
    mine: list[tuple[int, Run]] = []
    held: list[tuple[int, Run]] = []
    try:
        for index, run in group:
            if clean or not run.resolved.cacheable:
                mine.append((index, run))
                continue
            claim = store.claim(run.key)
            if claim is None:
                held.append((index, run))
            elif (document := store.get(run.key)) is not None:  # written since we looked
                claim.release()
                documents[index] = document
                summary.cached.append(run.names)
            else:
                claims[index] = claim
                mine.append((index, run))
        if not mine:
            return held
        positions = {id(run): index for index, run in mine}
        for run, document in _compute_model(manifest, [run for _, run in mine], summary):
            index = positions[id(run)]
            if run.resolved.cacheable:
                store.put(run.key, document)
            if index in claims:
                claims.pop(index).release()
            documents[index] = document
            summary.computed.append(run.names)
    finally:
        for claim in claims.values():
            claim.release()
    return held


def _restamp(run: Run, document: dict[str, Any]) -> dict[str, Any]:
    if isinstance(run, CorpusRun):
        document["model"]["name"], document["model"]["slug"] = run.model.name, run.model.slug
        document["corpus"]["name"], document["corpus"]["slug"] = run.corpus.name, run.corpus.slug
        return document
    return restamp(document, run.model.name, run.model.slug, run.prompt.name, run.prompt.slug)


def _compute_model(manifest: Manifest, runs: list[Run], summary: BuildSummary
                   ) -> Iterator[tuple[Run, dict[str, Any]]]:
    """Load the model once; one forward pass per prompt or corpus window serves all its
    missing lenses."""
    from ..lens.engine import ModelSession
    from ..models.prompts import PromptError

    spec = runs[0].model
    started = time.perf_counter()
    log.info("loading model '%s' (%s)", spec.name, spec.reference)
    session = ModelSession.open(spec.request, runs[0].resolved)
    summary.loaded_models.append(spec.name)
    log.info("loaded '%s' in %.1f s: %s, %d layers, vocab %d", spec.name,
             time.perf_counter() - started, session.facts["architecture"],
             session.num_layers, session.facts["vocab_size"])
    try:
        for run in runs:  # a lens that does not fit the model fails before any work
            try:
                session.bind(run.lens)
            except LensReportError as exc:
                raise ManifestError(manifest.path, spec.line,
                                    f"model '{spec.name}'.lens.{run.lens.name}: {exc}") from None
        prompts: dict[str, list[PromptRun]] = {}
        corpora: dict[str, list[CorpusRun]] = {}
        for run in runs:
            if isinstance(run, CorpusRun):
                corpora.setdefault(run.corpus.name, []).append(run)
            else:
                prompts.setdefault(run.prompt.name, []).append(run)
        groups = list(prompts.values())
        encoded = []
        for group in groups:
            prompt = group[0].prompt
            try:
                encoded.append(session.prepare(prompt.request))
            except PromptError as exc:
                raise prompt_error(manifest, prompt, exc) from None
        for prompt in encoded:  # greedy continuations, before the lens reads them
            session.generate(prompt)
        # Each prompt's forward pass alone, shortest first: a document must be a function of
        # its run's content, and in a padded batch a prompt's numbers depend on its
        # batch-mates (other matrix shapes, another order of summation), so a shard, or a
        # build computing a subset, would write other bytes. Batching saved nothing
        # measurable on CPU (README, "Where things are cached").
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        for index in progress(order, total=len(groups), desc=f"lens {spec.name}",
                              unit="prompt"):
            [(_, hidden, last_hidden)] = session.hidden_states(
                [encoded[index].input_ids], [encoded[index].name],
                parts=spec.lens.decompose or spec.lens.sublayer)
            for run in groups[index]:
                yield run, session.run(encoded[index], run.key, hidden, last_hidden, run.lens,
                                       spec.lens.top_k, spec.lens.decompose,
                                       spec.lens.sublayer)
        for corpus_runs in corpora.values():
            yield from _compute_corpus(session, corpus_runs)
    finally:
        session.close()


def _compute_corpus(session: Any, runs: list[CorpusRun]
                    ) -> Iterator[tuple[CorpusRun, dict[str, Any]]]:
    """Curves for one corpus and every lens in ``runs``, in one pass over its windows."""
    from ..lens.corpus import windows
    from ..lens.curves import measure
    from ..models.prompts import group_token_ids
    from ..results.documents import corpus_document

    corpus, spec = runs[0].corpus, runs[0].model
    started = time.perf_counter()
    bar = progress(total=corpus.max_tokens, desc=f"corpus {corpus.name} · {spec.name}",
                   unit="tok")
    try:
        tokenizer = session.loaded.tokenizer
        groups = [(group.name, group_token_ids(tokenizer, group, f"corpus '{corpus.name}'",
                                               spec.name, session.head.weight.shape[0]))
                  for group in corpus.targets]
        sums = measure(session, windows(corpus.source, tokenizer, corpus.context,
                                        corpus.max_tokens), [run.lens for run in runs],
                       bar.update, groups)
    except LensReportError as exc:
        raise LensReportError(f"model '{spec.name}', corpus '{corpus.name}': {exc}") from None
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    scored = sums[runs[0].lens].scored_tokens
    log.info("corpus '%s' on '%s': %d tokens scored in %.1f s (%.0f tokens/s, %d lens(es))",
             corpus.name, spec.name, scored, seconds, scored / max(seconds, 1e-9), len(runs))
    if scored == 0:
        raise LensReportError(f"corpus '{corpus.name}' ({corpus.source.describe()}) has no "
                              "text to score")
    source = corpus.source
    description = {"name": corpus.name, "slug": corpus.slug,
                   "source": source.path.name if source.path else source.dataset,
                   "split": None if source.path else source.split, "column": source.column,
                   "context": corpus.context, "max_tokens": corpus.max_tokens,
                   **({"targets": [g.describe() for g in corpus.targets]}
                      if corpus.targets else {})}
    for run in runs:
        yield run, corpus_document(key=run.key, corpus=description,
                                   model_facts=dict(session.facts),
                                   lens=session.lens_description(run.lens), sums=sums[run.lens])


def _spec_from_document(document: dict[str, Any]) -> ModelSpec:
    """A saved document's model, as a manifest model entry (for `results:`)."""
    model, lens = document["model"], document["lens"]
    name = visible(model.get("name") or "model")  # names are kept as shown (text.py)
    return ModelSpec(name=name, slug=slugify(name), reference=model.get("reference") or name,
                     revision=model.get("revision"), dtype=model.get("dtype") or "auto",
                     device=model.get("device") or "auto",
                     lens=LensSettings((lens.get("kind", "logit"),), int(lens.get("top_k", 5))),
                     final_norm=None, unembedding=None, trust_remote_code=False, note=None,
                     line=0)


def _prompt_from_document(document: dict[str, Any]) -> PromptSpec:
    prompt = document["prompt"]
    name = visible(prompt.get("name") or "prompt")
    return PromptSpec(name=name, slug=slugify(name), text=prompt["text"],
                      target=prompt.get("target"), note=None, line=0)


def add_saved_results(manifest: Manifest, documents: dict[PromptKey, dict[str, Any]]
                      ) -> Manifest:
    """Put the manifest's `results:` files (saved with run_lens, or by another build) on the
    site: their models and prompts join the manifest's, by name."""
    models = {m.name: m for m in manifest.models}
    prompts = {p.name: p for p in manifest.prompts}
    for path in manifest.result_files:
        try:
            document = read_document(path)
        except LensReportError as exc:
            raise ManifestError(manifest.path, manifest.results_line, str(exc)) from None
        model, prompt = _spec_from_document(document), _prompt_from_document(document)
        names = PromptKey(model.name, prompt.name, model.lens.kind)
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
                known.lens.kinds + (model.lens.kind,), known.lens.top_k, known.lens.tuned,
                known.lens.jacobian))
        prompts.setdefault(prompt.name, prompt)
        documents[names] = document
    model_slugs = unique_slugs(list(models), RESERVED_MODEL_SLUGS)
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


def compute_shard(manifest: Manifest, shard: int, shards: int, *, clean: bool = False
                  ) -> BuildSummary:
    """Compute this shard's share of the runs into the results store; render nothing."""
    started = time.perf_counter()
    summary = BuildSummary()
    store = ResultsStore(default_cache_dir(manifest))
    runs = plan(manifest).runs
    mine = shard_runs(runs, shard, shards)
    log.info("shard %d/%d: %d of %d run(s)", shard, shards, len(mine), len(runs))
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
    from ..site.export import find_browser
    from ..site.pages import render_site
    from ..site.publish import publish, remove_stale_staging, staging_folder

    started = time.perf_counter()
    site_dir = site_dir or default_site_dir(manifest)
    summary = BuildSummary(site_dir=site_dir)
    counter = _WarningCounter()
    log.addHandler(counter)
    try:
        check_selection(manifest, only_models, only_prompts)
        if manifest.site.export:
            find_browser()  # no browser: say so before any model work
        store = ResultsStore(default_cache_dir(manifest))
        planned = plan(manifest)
        if not compute:
            _require_stored(planned.runs, store)
        chosen = [run for run in planned.runs
                  if (not only_models or run.model.name in only_models)
                  and (not only_prompts or (isinstance(run, PromptRun)
                                            and run.prompt.name in only_prompts))]
        computed = compute_results(manifest, chosen, store, clean, summary)
        # Prompt documents by (model, prompt, lens), curves by (corpus, model, lens): two
        # tables, so a corpus named like a model can never take a prompt's place.
        documents: dict[PromptKey, dict[str, Any]] = {}
        corpus_documents: dict[CorpusKey, dict[str, Any]] = {}
        found = list(zip(chosen, computed))
        for run in planned.runs:  # outside --only-*: shown if their results are cached
            if run not in chosen and (document := store.get(run.key)) is not None:
                found.append((run, _restamp(run, document)))
        for run, document in found:
            table = corpus_documents if isinstance(run, CorpusRun) else documents
            table[run.names] = document
        replayed: set[str] = set()
        for run in planned.prompt_runs:
            document = documents.get(run.names, {})
            # A prompt's warnings once (not per lens), a lens's once per model.
            messages = document.get("lens_warnings", []) + (
                document.get("warnings", []) if run.lens.name == run.model.lens.kind else [])
            for message in messages:
                if message not in replayed:
                    replayed.add(message)
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
                        corpus_documents=corpus_documents, store=store)
            _check_links(staging, manifest.site.site_url, strict)
            summary.warnings = list(counter.messages)
            publish(staging, site_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        log.removeHandler(counter)
    summary.seconds = time.perf_counter() - started
    return summary


def _check_links(staging: Path, site_url: str | None, strict: bool) -> None:
    """Links in the written pages to files the site lacks: a warning, or with --strict an
    error (the staged site is then dropped and the previous one stays)."""
    from ..site.links import broken_links

    broken = broken_links(staging, site_url)
    if not broken:
        return
    shown = ", ".join(f"{page} -> {link}" for page, link in broken[:5])
    more = f" and {len(broken) - 5} more" if len(broken) > 5 else ""
    message = f"{len(broken)} broken link(s) in the written pages: {shown}{more}"
    if strict:
        raise LensReportError(f"--strict: {message}; the site was not written")
    log.warning("%s", message)


def _require_stored(runs: list[Run], store: ResultsStore) -> None:
    """--no-compute: every run must be in the store; list the missing ones otherwise."""
    missing = [run for run in runs if store.get(run.key) is None]
    if not missing:
        return
    shown = [f"({run.model.name}, "
             f"{run.prompt.name if isinstance(run, PromptRun) else 'corpus ' + run.corpus.name},"
             f" {run.lens.label})" for run in missing[:10]]
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    raise LensReportError(f"--no-compute: {len(missing)} run(s) are not in the results store "
                          f"{store.location}: {', '.join(shown)}{more}; run the shards "
                          "(build --shard K/N) first")
