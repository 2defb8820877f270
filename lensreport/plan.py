"""The plan: one run per (model, prompt, lens) and per (corpus, model, lens), each with a
content key, and how runs are split into shards.

Keys are content, never places: weight digests or a Hub commit, the device type, the lens
(and its files' digests), the prompt or corpus content. Library versions are recorded in
each document, not keyed: results.identity.LENS_IMPLEMENTATION changes when the numbers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .errors import ManifestError
from .lens.corpus import digest
from .lens.kinds import Lens, LensSettingError, lens_class
from .manifest.checks import resolve_model
from .manifest.specs import CorpusSpec, Manifest, ModelSpec, PromptSpec
from .models.loading import device_type
from .models.references import ResolvedModel
from .results.identity import cache_key


class PromptKey(NamedTuple):
    """Where a prompt run's document sits on the site."""

    model: str
    prompt: str
    lens: str


class CorpusKey(NamedTuple):
    """Where a corpus run's curves sit on the site."""

    corpus: str
    model: str
    lens: str


@dataclass(frozen=True)
class PromptRun:
    """One (model, prompt, lens): one cached document and one figure (or lens of a figure)."""

    model: ModelSpec
    prompt: PromptSpec
    lens: Lens
    resolved: ResolvedModel
    key: str

    @property
    def names(self) -> PromptKey:
        return PromptKey(self.model.name, self.prompt.name, self.lens.name)


@dataclass(frozen=True)
class CorpusRun:
    """One (corpus, model, lens): one cached curves document."""

    corpus: CorpusSpec
    model: ModelSpec
    lens: Lens
    resolved: ResolvedModel
    key: str

    @property
    def names(self) -> CorpusKey:
        return CorpusKey(self.corpus.name, self.model.name, self.lens.name)


Run = PromptRun | CorpusRun


@dataclass(frozen=True)
class Plan:
    prompt_runs: list[PromptRun]
    corpus_runs: list[CorpusRun]

    @property
    def runs(self) -> list[Run]:
        return [*self.prompt_runs, *self.corpus_runs]


def model_lenses(manifest: Manifest, model: ModelSpec, resolved: ResolvedModel
                 ) -> list[tuple[Lens, str | None]]:
    """The model's lenses with their content identities; a lens that cannot be found is a
    manifest error at the model's line."""
    lenses = []
    for name in model.lens.kinds:
        where = f"model '{model.name}'.lens.{name}"
        try:
            lens = lens_class(name).from_settings(model.lens, model.reference,
                                                  resolved.kind == "hub")
            identity = lens.identity()
        except LensSettingError as exc:
            raise ManifestError(manifest.path, model.line, f"{where}: {exc}") from None
        lenses.append((lens, identity))
    return lenses


def plan(manifest: Manifest) -> Plan:
    """Prompt runs and corpus runs, each keyed by the content that sets its numbers."""
    prompt_runs, corpus_runs = [], []
    corpus_digests = {corpus.name: digest(corpus.source) for corpus in manifest.corpora}
    for model in manifest.models:
        resolved = resolve_model(manifest, model)
        common = {"model": resolved.identity, "dtype": model.dtype,
                  "device": device_type(model.device, model.device_map),
                  "final_norm": model.final_norm, "unembedding": model.unembedding}
        lenses = model_lenses(manifest, model, resolved)
        for corpus in manifest.corpora:
            for lens, identity in lenses:
                key = cache_key({**common, "lens_kind": lens.name, "lens_identity": identity,
                                 "corpus": corpus_digests[corpus.name],
                                 "max_tokens": corpus.max_tokens, "context": corpus.context,
                                 **({"targets": [g.describe() for g in corpus.targets]}
                                    if corpus.targets else {})})
                corpus_runs.append(CorpusRun(corpus, model, lens, resolved, key))
        for prompt in (p for p in manifest.prompts if p.runs_on(model.name)):
            for lens, identity in lenses:
                key = cache_key({**common, "lens_kind": lens.name, "lens_identity": identity,
                                 "top_k": model.lens.top_k,
                                 "decompose": model.lens.decompose,
                                 "rows": model.lens.rows,
                                 **prompt.request.identity()})
                prompt_runs.append(PromptRun(model, prompt, lens, resolved, key))
    return Plan(prompt_runs, corpus_runs)


def shard_runs(runs: list[Run], shard: int, shards: int) -> list[Run]:
    """Shard ``shard`` (1-based) of ``shards``: the same answer on every machine.

    With at least as many models as shards, whole models go to the least-loaded shard
    (largest first), so each model loads once; otherwise the runs, in model order, are cut
    into contiguous blocks, so a model loads on as few shards as possible.
    """
    by_model: dict[str, list[Run]] = {}
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
