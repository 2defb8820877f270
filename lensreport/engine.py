"""One loaded model and everything needed to run the lens on its prompts.

Kept apart from build.py so that a build served entirely from the cache never imports torch.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from . import models as model_refs
from .errors import LensReportError, ManifestError
from .heads import LensHead, check_hidden_states, find_head
from .lens import lens_inputs, run_lens
from .manifest import ModelSpec, PromptSpec
from .results import make_document
from .tokens import display_vocab, tokenizer_kind

log = logging.getLogger("lensreport")

VERIFY_TEXT = "The quick brown fox"
# Padded tokens per batched forward pass.
BATCH_TOKENS = 4096


def _names(batch: list[int], encoded: list["EncodedPrompt"]) -> str:
    return ", ".join(repr(encoded[i].name) for i in batch)


@dataclass
class EncodedPrompt:
    name: str
    input_ids: list[int]
    target_id: int | None
    target_token: str | None
    warnings: list[str] = field(default_factory=list)


@dataclass
class ModelSession:
    loaded: model_refs.LoadedModel
    head: LensHead
    vocab: list[str]
    tokenizer_info: dict[str, Any]
    translators: Any = None  # tuned.Translators, once load_tuned_lens has run
    tuned_description: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, spec: ModelSpec, resolved: model_refs.ResolvedModel) -> "ModelSession":
        return cls.from_loaded(model_refs.load(spec, resolved))

    @classmethod
    def from_loaded(cls, loaded: model_refs.LoadedModel) -> "ModelSession":
        """A session on a model that is already in memory (the build's, or a notebook's)."""
        probe = loaded.tokenizer(VERIFY_TEXT, return_tensors="pt").input_ids.to(loaded.device)
        head = find_head(loaded.model, probe, loaded.spec.final_norm, loaded.spec.unembedding)
        check_hidden_states(loaded.model, head, probe)
        difference = head.check_max_abs_diff
        vocab_size = head.weight.shape[0]
        tokenizer = loaded.tokenizer
        info = {"class": type(tokenizer).__name__, "kind": tokenizer_kind(tokenizer),
                "size": len(tokenizer), "bos_token": tokenizer.bos_token,
                "adds_special_tokens": True}
        loaded.facts["head_check_max_abs_diff"] = float(f"{difference:.3g}")
        return cls(loaded, head, display_vocab(tokenizer, vocab_size), info)

    @property
    def facts(self) -> dict[str, Any]:
        return self.loaded.facts

    def close(self) -> None:
        del self.loaded.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def max_tokens(self) -> int:
        """Longest prompt this model accepts: its context, and what memory allows."""
        facts = self.facts
        return model_refs.prompt_limit(facts["max_context"], facts["num_layers"],
                                       facts["hidden_size"] or self.head.weight.shape[1],
                                       str(self.head.weight.device))

    def prepare(self, prompt: PromptSpec, manifest_path: Path) -> EncodedPrompt:
        """Tokenize and check a prompt against this model, before any lens work starts."""
        name = self.loaded.spec.name
        ids, target_ids = model_refs.check_prompt(self.loaded.tokenizer, prompt, name,
                                                  self.max_tokens(), manifest_path)
        encoded = EncodedPrompt(prompt.name, ids, None, None)
        if prompt.target is not None:
            if len(target_ids) > 1:
                shown = ", ".join(repr(self.vocab[i]) for i in target_ids)
                encoded.warnings.append(
                    f"prompt '{prompt.name}': target {prompt.target!r} is {len(target_ids)} "
                    f"tokens for model '{name}' ({shown}); tracking the first")
            encoded.target_id = target_ids[0]
            encoded.target_token = self.vocab[target_ids[0]]
        return encoded

    def hidden_states(self, encoded: list[EncodedPrompt]
                      ) -> Iterator[tuple[int, tuple[torch.Tensor, ...], torch.Tensor]]:
        """Forward passes in padded batches of prompts of similar length.

        Yields (index into ``encoded``, that prompt's hidden states, its last hidden state),
        unpadded. Batches are right-padded whatever the tokenizer's padding side: with causal
        attention no real token sees the padding after it, and positions stay 0..n-1 (left
        padding would shift them), so a batched prompt gets the numbers it gets alone.
        """
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        batches: list[list[int]] = []
        for index in order:
            length = len(encoded[index].input_ids)
            if batches and (len(batches[-1]) + 1) * length <= BATCH_TOKENS:
                batches[-1].append(index)
            else:
                batches.append([index])
        tokenizer, device = self.loaded.tokenizer, self.loaded.device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        for batch in batches:
            longest = max(len(encoded[i].input_ids) for i in batch)
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, index in enumerate(batch):
                tokens = encoded[index].input_ids
                ids[row, :len(tokens)] = torch.tensor(tokens)
                mask[row, :len(tokens)] = 1
            with torch.no_grad(), self._memory_errors(batch, encoded):
                output = self.loaded.model.base_model(
                    input_ids=ids.to(device), attention_mask=mask.to(device),
                    output_hidden_states=True, use_cache=False)
            for row, index in enumerate(batch):
                length = len(encoded[index].input_ids)
                yield (index, tuple(h[row, :length] for h in output.hidden_states),
                       output.last_hidden_state[row, :length])
            del output

    @contextmanager
    def _memory_errors(self, batch: list[int], encoded: list[EncodedPrompt]) -> Iterator[None]:
        name = self.loaded.spec.name
        try:
            yield
        except torch.cuda.OutOfMemoryError as exc:
            raise LensReportError(f"model '{name}', prompt(s) {_names(batch, encoded)}: out of "
                                  "GPU memory; shorten the prompt or use device: cpu") from exc
        except MemoryError as exc:
            raise LensReportError(f"model '{name}', prompt(s) {_names(batch, encoded)}: out of "
                                  "memory; shorten the prompt") from exc

    def load_tuned_lens(self, manifest_path: Path) -> None:
        """Read the model's tuned lens and check it fits, before any prompt runs."""
        from . import tuned

        spec = self.loaded.spec
        source = spec.lens.tuned or tuned.TunedSource()
        folder = tuned.fetch(source, spec.reference)
        config = tuned.read_config(folder)
        facts = self.facts
        try:
            tuned.check_shape(config, facts["hidden_size"] or self.head.weight.shape[1],
                              facts["num_layers"] or 0, f"model '{spec.name}'.lens.tuned")
        except LensReportError as exc:
            raise ManifestError(manifest_path, spec.line, str(exc)) from None
        self.translators = tuned.Translators.load(folder, self.head.weight.device)
        self.tuned_description = {"source": source.describe(spec.reference),
                                  "base_model": config.get("base_model_name_or_path")}

    def lens_description(self, kind: str) -> dict[str, Any]:
        """The ``lens`` field of a document: the kind, the head, and a tuned lens's source."""
        lens = {"kind": kind, **self.head.description}
        if kind == "tuned":
            lens["tuned"] = self.tuned_description
        return lens

    def run(self, prompt: PromptSpec, encoded: EncodedPrompt, key: str,
            hidden: tuple[torch.Tensor, ...], last_hidden: torch.Tensor,
            kind: str | None = None) -> dict[str, Any]:
        """One lens on one prompt's hidden states, as a results document."""
        spec = self.loaded.spec
        kind = kind or spec.lens.kind
        input_ids = torch.tensor(encoded.input_ids, device=self.loaded.device)
        try:
            with torch.no_grad(), self._memory_errors([0], [encoded]):
                inputs = lens_inputs(hidden, last_hidden, self.head, kind,
                                     self.translators)
                stats = run_lens(inputs, self.head, input_ids, spec.lens.top_k,
                                 encoded.target_id)
        except LensReportError as exc:
            raise LensReportError(f"model '{spec.name}', prompt '{prompt.name}', {kind} lens: "
                                  f"{exc}") from None
        document = make_document(
            key=key, model_facts=dict(self.facts), tokenizer=self.tokenizer_info,
            prompt={"name": prompt.name, "slug": prompt.slug, "text": prompt.text,
                    "target": prompt.target, "target_id": encoded.target_id,
                    "target_token": encoded.target_token},
            lens={**self.lens_description(kind), "top_k": spec.lens.top_k},
            input_ids=encoded.input_ids, vocab=self.vocab, stats=stats)
        document["warnings"] = encoded.warnings  # kept, so a cached run warns again
        return document

    def run_corpus(self, runs: list[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Curves for one corpus and every lens in ``runs`` (build.CorpusRun), one pass."""
        import sys
        import time

        from .corpus import windows
        from .curves import measure
        from .results import corpus_document

        corpus, spec = runs[0].corpus, self.loaded.spec
        kinds = [run.lens for run in runs]
        started = time.perf_counter()
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=corpus.max_tokens, desc=f"corpus {corpus.name} · {spec.name}",
                       unit="tok", unit_scale=True, leave=False)
        try:
            sums = measure(self, windows(corpus.source, self.loaded.tokenizer, corpus.context,
                                         corpus.max_tokens), kinds,
                           bar.update if bar is not None else None)
        except LensReportError as exc:
            raise LensReportError(f"model '{spec.name}', corpus '{corpus.name}': {exc}") from None
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - started
        scored = sums[kinds[0]].scored_tokens
        log.info("corpus '%s' on '%s': %d tokens scored in %.1f s (%.0f tokens/s, %d lens(es))",
                 corpus.name, spec.name, scored, seconds, scored / max(seconds, 1e-9), len(kinds))
        if scored == 0:
            raise LensReportError(f"corpus '{corpus.name}' ({corpus.source.describe()}) has no "
                                  "text to score")
        for run in runs:
            yield run, corpus_document(key=run.key, corpus=corpus, model_facts=dict(self.facts),
                                       lens=self.lens_description(run.lens),
                                       sums=sums[run.lens])
