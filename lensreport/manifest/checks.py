"""Manifest checks that need more than the YAML: model references resolved and prompts
checked against each model's tokenizer, before any weights load. The engine's errors say
what is wrong; this layer adds the manifest's file:line."""

from __future__ import annotations

import logging

from ..errors import LensReportError, ManifestError
from ..models.limits import text_config_limit, tokenizer_and_config
from ..models.loading import text_config
from ..models.prompts import PromptError, encode_prompt, group_token_ids
from ..models.loading import device_type
from ..models.references import ResolvedModel, resolve
from .specs import Manifest, ModelSpec, PromptSpec

log = logging.getLogger("lensreport")


def resolve_model(manifest: Manifest, spec: ModelSpec) -> ResolvedModel:
    """A model entry's files (no weights read); ManifestError at the entry's line."""
    try:
        return resolve(spec.reference, spec.revision, manifest.root)
    except LensReportError as exc:
        raise ManifestError(manifest.path, spec.line, f"model '{spec.name}'.model: {exc}") \
            from None


def prompt_error(manifest: Manifest, prompt: PromptSpec, exc: PromptError) -> ManifestError:
    """A prompt's problem with a model, at the prompt's line."""
    return ManifestError(manifest.path, prompt.line, str(exc))


def check_prompts(manifest: Manifest, models: list[tuple[ModelSpec, ResolvedModel]],
                  warn_unreachable: bool = False) -> None:
    """Every prompt (and corpus token group) against every given model's tokenizer, before
    any weights load: lengths, targets, groups, chat templates.

    A Hub model that cannot be reached (offline) is skipped here — loading it reports that —
    with a warning when ``warn_unreachable`` (validate).
    """
    for spec, resolved in models:
        try:
            loaded = tokenizer_and_config(spec.request, resolved)
        except LensReportError as exc:
            if resolved.kind != "hub":
                raise
            if warn_unreachable:
                log.warning("prompts not checked against model '%s': %s", spec.name,
                            str(exc).split(": ", 2)[-1][:200])
            continue
        if loaded is None:
            continue
        tokenizer, config = loaded
        limit = text_config_limit(config, device_type(spec.device, spec.device_map))
        rows = getattr(text_config(config), "vocab_size", None)  # the unembedding's rows
        for prompt in (p for p in manifest.prompts if p.runs_on(spec.name)):
            try:
                encode_prompt(tokenizer, prompt.request, spec.name, limit, rows)
            except PromptError as exc:
                raise prompt_error(manifest, prompt, exc) from None
        for corpus in manifest.corpora:
            for group in corpus.targets:
                try:
                    group_token_ids(tokenizer, group, f"corpus '{corpus.name}'", spec.name,
                                    rows)
                except PromptError as exc:
                    raise ManifestError(manifest.path, corpus.line, str(exc)) from None
