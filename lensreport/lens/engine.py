"""One loaded model and everything needed to run lenses on its prompts and corpus windows.

The engine knows no manifest: it takes a :class:`ModelRequest` (or a model already in
memory), raises errors that say what went wrong and how to fix it, and returns results
documents. Kept apart from the build so that a build served from the cache never imports
torch.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from transformers import GenerationConfig

from ..errors import LensReportError
from ..models import loading
from ..models.blocks import Structure, find_blocks
from ..models.heads import LensHead, _tolerance, find_head
from ..models.limits import prompt_limit
from ..models.patching import PatchRunner
from ..models.prompts import EncodedPrompt, PromptRequest, encode_prompt
from ..models.references import ResolvedModel
from ..models.states import ResidualStream, stream_reader
from ..models.tokens import display_vocab, tokenizer_kind
from ..results.documents import make_document
from .decompose import StreamStates, attributed_tokens, capture, decompose, row_parts
from .kinds import Lens
from .tiled import covered_depths, lens_inputs, lens_statistics, row_depths

log = logging.getLogger("lensreport")

VERIFY_TEXT = "The quick brown fox"
# Padded tokens per batched forward pass.
BATCH_TOKENS = 4096


@dataclass(frozen=True)
class ModelReading:
    """What head discovery found out about a model and its tokenizer (reused per model)."""

    head: LensHead
    vocab: list[str]
    tokenizer_info: dict[str, Any]
    stream: ResidualStream  # reads a batch's rows (models/states.py)
    blocks: Structure | None = None  # what each block adds (None: see blocks_note)
    blocks_note: str | None = None


def discover(model: Any, tokenizer: Any, device: str, final_norm: str | None = None,
             unembedding: str | None = None) -> ModelReading:
    """Find and prove the head and the rows (two probe forward passes), and read the
    vocabulary."""
    probe = tokenizer(VERIFY_TEXT, return_tensors="pt").input_ids.to(device)
    head = find_head(model, probe, final_norm, unembedding)
    stream = stream_reader(model, head, probe)
    info = {"class": type(tokenizer).__name__, "kind": tokenizer_kind(tokenizer),
            "size": len(tokenizer), "bos_token": tokenizer.bos_token}
    blocks, note = None, None
    try:
        blocks = find_blocks(model, head, probe)
    except LensReportError as exc:
        note = f"{type(model).__name__}: no direct logit attribution: {exc}"
        log.info("%s", note)
    return ModelReading(head, display_vocab(tokenizer, head.weight.shape[0]), info, stream,
                        blocks, note)


@dataclass
class ModelSession:
    loaded: loading.LoadedModel
    reading: ModelReading
    _bound: dict[Lens, Lens] = field(default_factory=dict)
    # The last prompt's attribution (its hidden states, tokens, field): every lens of a
    # prompt reads the same forward pass and the same final row, so it is computed once.
    _decomposed: tuple[Any, list[list[int]], dict[str, Any]] | None = None

    @classmethod
    def open(cls, request: loading.ModelRequest, resolved: ResolvedModel) -> "ModelSession":
        return cls.from_loaded(loading.load(request, resolved))

    @classmethod
    def from_loaded(cls, loaded: loading.LoadedModel,
                    reading: ModelReading | None = None) -> "ModelSession":
        """A session on a model that is already in memory (the build's, or a notebook's);
        ``reading`` skips head discovery for a model seen before."""
        request = loaded.request
        reading = reading or discover(loaded.model, loaded.tokenizer, loaded.device,
                                      request.final_norm, request.unembedding)
        loaded.facts["head_check_max_abs_diff"] = float(
            f"{reading.head.check_max_abs_diff:.3g}")
        return cls(loaded, reading)

    @property
    def head(self) -> LensHead:
        return self.reading.head

    @property
    def vocab(self) -> list[str]:
        return self.reading.vocab

    @property
    def facts(self) -> dict[str, Any]:
        return self.loaded.facts

    @property
    def name(self) -> str:
        return self.loaded.request.name

    @property
    def reference(self) -> str:
        return self.loaded.request.reference

    @property
    def num_layers(self) -> int:
        """L: the number of blocks (documents have L + 1 rows)."""
        return self.facts["num_layers"] or 0

    @property
    def hidden_size(self) -> int:
        """Width of the residual stream (what a translator acts on)."""
        return self.facts["hidden_size"] or self.head.weight.shape[1]

    def encode(self, text: str) -> list[int]:
        """``text`` as the tokenizer encodes it by default (special tokens included)."""
        return list(self.loaded.tokenizer(text).input_ids)

    def patch_runner(self, target_ids: list[int], position: int, prefix_cache: bool = True
                     ) -> PatchRunner:
        """This model ready to run ``target_ids`` patched at ``position``."""
        with self._memory_errors("the patchscope's target prompt"):
            return PatchRunner(self.loaded.model, self.head, target_ids, position,
                               prefix_cache)

    def close(self) -> None:
        del self.loaded.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def max_tokens(self) -> int:
        """Longest prompt this model accepts: its context, and what memory allows."""
        return prompt_limit(self.facts["max_context"], self.facts["num_layers"],
                            self.hidden_size, str(self.head.weight.device))

    def bind(self, lens: Lens) -> Lens:
        """``lens`` ready to read this model (loaded and checked once per session)."""
        if lens not in self._bound:
            self._bound[lens] = lens.bind(self)
        return self._bound[lens]

    def prepare(self, request: PromptRequest) -> EncodedPrompt:
        """Tokenize and check a prompt against this model, before any lens work starts.
        Raises models.prompts.PromptError when it does not fit."""
        encoded = encode_prompt(self.loaded.tokenizer, request, self.name, self.max_tokens(),
                                self.head.weight.shape[0])
        if len(encoded.target_ids) > 1:
            shown = ", ".join(repr(self.vocab[i]) for i in encoded.target_ids)
            encoded.warnings.append(
                f"prompt '{request.name}': target {request.target!r} is "
                f"{len(encoded.target_ids)} tokens for model '{self.name}' ({shown}); "
                "tracking the first")
        return encoded

    def generate(self, encoded: EncodedPrompt) -> None:
        """Continue a prompt greedily by ``request.generate`` tokens (transformers'
        ``generate`` with plain greedy decoding: the top-1 token at every step, whatever the
        model's generation_config says; it stops early at an end-of-sequence token), so the
        lens reads prompt and continuation in one pass."""
        count = encoded.request.generate
        if not count or encoded.generated_from is not None:
            return
        tokenizer, device = self.loaded.tokenizer, self.loaded.device
        ids = torch.tensor([encoded.input_ids], device=device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
            tokenizer.eos_token_id
        model = self.loaded.model
        saved = model.generation_config
        # Plain greedy: the model's generation_config (sampling, beams, repetition penalties,
        # minimum lengths, suppressed tokens) would otherwise still apply; only its special
        # tokens are kept, so it stops at the model's end-of-sequence tokens.
        model.generation_config = GenerationConfig(
            bos_token_id=saved.bos_token_id, eos_token_id=saved.eos_token_id,
            pad_token_id=pad)
        try:
            with torch.no_grad(), self._memory_errors(f"prompt '{encoded.name}', generating"):
                output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                        do_sample=False, num_beams=1, max_new_tokens=count,
                                        pad_token_id=pad)
        finally:
            model.generation_config = saved
        encoded.generated_from = len(encoded.input_ids)
        encoded.input_ids = output[0].tolist()
        if encoded.template_mask is not None:
            encoded.template_mask = encoded.template_mask + [False] * (
                len(encoded.input_ids) - encoded.generated_from)

    def hidden_states(self, sequences: list[list[int]], names: list[str] | None = None,
                      parts: bool = False
                      ) -> Iterator[tuple[int, tuple[torch.Tensor, ...], torch.Tensor]]:
        """Forward passes in padded batches of sequences of similar length.

        Yields (index into ``sequences``, its hidden states, its last hidden state),
        unpadded, in batch order (shortest first). Batches are right-padded whatever the
        tokenizer's padding side: with causal attention no real token sees the padding after
        it, and positions stay 0..n-1 (left padding would shift them). A batched sequence
        gets the numbers it gets alone only up to float rounding (the matrix shapes change
        the kernels' order of summation, and a rounded value or a near-tie's rank can flip),
        so batch only sequences whose batch is fixed by a run's content (a corpus's
        windows); a prompt's document comes from its own pass (commands/build.py).
        ``names`` label sequences in memory errors. ``parts`` keeps, in the same pass,
        what each block's attention and MLP added (the hidden states' ``parts``, a
        decompose.StreamStates) where the model decomposes.
        """
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        batches: list[list[int]] = []
        for index in order:
            length = len(sequences[index])
            if batches and (len(batches[-1]) + 1) * length <= BATCH_TOKENS:
                batches[-1].append(index)
            else:
                batches.append([index])
        tokenizer, device = self.loaded.tokenizer, self.loaded.device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        for batch in batches:
            longest = max(len(sequences[i]) for i in batch)
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, index in enumerate(batch):
                tokens = sequences[index]
                ids[row, :len(tokens)] = torch.tensor(tokens)
                mask[row, :len(tokens)] = 1
            shown = ", ".join(repr(names[i]) for i in batch) if names else \
                f"{len(batch)} sequence(s)"
            structure = self.reading.blocks if parts else None
            with torch.no_grad(), self._memory_errors(shown), \
                    capture(structure) if structure else nullcontext() as kept:
                hidden, last = self.reading.stream.read(ids.to(device), mask.to(device))
            for row, index in enumerate(batch):
                length = len(sequences[index])
                states = StreamStates(h[row, :length] for h in hidden)
                states.parts = row_parts(structure, kept, row, length) \
                    if structure is not None and kept else None
                yield index, states, last[row, :length]
            del hidden, last

    @contextmanager
    def _memory_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except torch.cuda.OutOfMemoryError as exc:
            raise LensReportError(f"model '{self.name}', {what}: out of GPU memory; shorten "
                                  "the prompt or use device: cpu") from exc
        except MemoryError as exc:
            raise LensReportError(f"model '{self.name}', {what}: out of memory; shorten the "
                                  "prompt") from exc

    def describe_prompt(self, encoded: EncodedPrompt) -> dict[str, Any]:
        """The ``prompt`` field of a document: what was asked (chat messages, groups and
        generation only where given)."""
        request = encoded.request
        target = encoded.target_id
        described: dict[str, Any] = {
            "name": request.name, "slug": request.slug, "text": request.text,
            "target": request.target, "target_id": target,
            "target_token": None if target is None else self.vocab[target]}
        if request.groups:
            described["targets"] = [group.describe() for group in request.groups]
        if request.messages is not None:
            described["messages"] = [{"role": role, "content": content}
                                     for role, content in request.messages]
        if request.generate:
            described["generate"] = {"max_new_tokens": request.generate, "do_sample": False}
        return described

    def lens_description(self, lens: Lens) -> dict[str, Any]:
        """The ``lens`` field of a document: the kind, the head, and what the lens adds."""
        return {"kind": lens.name, **self.head.description, **self.bind(lens).describe()}

    def run(self, encoded: EncodedPrompt, key: str, hidden: tuple[torch.Tensor, ...],
            last_hidden: torch.Tensor, lens: Lens, top_k: int, decomposed: bool = True,
            sublayer: bool = False) -> dict[str, Any]:
        """One lens on one prompt's hidden states, as a results document; with
        ``decomposed``, its direct logit attribution too, with ``sublayer`` a row after each
        block's attention where blocks are sequential (both from ``hidden``'s parts, see
        :meth:`hidden_states`)."""
        bound = self.bind(lens)
        mid, rows_note = self._mid_states(hidden) if sublayer else (None, None)
        every = row_depths(self.num_layers, mid is not None)
        depths = covered_depths(bound, self.num_layers, mid is not None)
        device = self.loaded.device
        input_ids = torch.tensor(encoded.input_ids, device=device)
        groups = [torch.tensor(ids, device=self.head.weight.device) for ids in encoded.group_ids]
        try:
            with torch.no_grad(), self._memory_errors(f"prompt '{encoded.name}'"):
                inputs = lens_inputs(hidden, last_hidden, self.head, bound, depths, mid)
                stats = lens_statistics(inputs, self.head, input_ids, top_k, encoded.target_id,
                                        groups=groups)
        except LensReportError as exc:
            raise LensReportError(f"model '{self.name}', prompt '{encoded.name}', "
                                  f"{lens.label}: {exc}") from None
        document = make_document(
            key=key, model_facts=dict(self.facts), tokenizer=self.reading.tokenizer_info,
            prompt=self.describe_prompt(encoded),
            lens={**self.lens_description(lens), "top_k": top_k},
            input_ids=encoded.input_ids, vocab=self.vocab, stats=stats,
            rows=tuple(every.index(depth) for depth in depths),
            groups=[(group.name, ids) for group, ids in zip(encoded.request.groups,
                                                            encoded.group_ids)],
            generated_from=encoded.generated_from, template_mask=encoded.template_mask)
        document["warnings"] = encoded.warnings  # kept, so a cached run warns again
        document["lens_warnings"] = bound.warnings()
        document["row_depths"] = [int(d) if d.is_integer() else d for d in every]
        if rows_note:
            document["rows_note"] = rows_note
        document.update(self._decomposition(encoded, hidden, last_hidden, stats)
                        if decomposed else {"decomposition": None})
        return document

    def _mid_states(self, hidden: tuple[torch.Tensor, ...]
                    ) -> tuple[list[torch.Tensor] | None, str | None]:
        """The stream after each block's attention (``h_{b−1} + attn_b``), or None and why
        there is none (parallel blocks, a family that does not decompose)."""
        structure, parts = self.reading.blocks, getattr(hidden, "parts", None)
        if structure is None or parts is None:
            return None, (self.reading.blocks_note or "the block parts were not captured") \
                .replace("no direct logit attribution", "no sub-layer rows")
        uneven = structure.uneven
        if uneven is not None:
            return None, (f"{self.facts.get('architecture')}: no sub-layer rows: they need an "
                          f"attention then an MLP in every block, and block {uneven[0]} adds "
                          f"{uneven[1]} part{'s' if uneven[1] > 1 else ''} (a one-part block "
                          "has no state inside it)")
        if not structure.sequential:
            return None, (f"{self.facts.get('architecture')}: no sub-layer rows: its blocks' "
                          "attention and MLP both read the block's input (parallel "
                          "attention), so there is no state between them")
        return [parts.before(b, hidden) + parts.blocks[b][0].to(hidden[b].device)
                for b in range(len(structure.blocks))], None

    def _decomposition(self, encoded: EncodedPrompt, hidden: tuple[torch.Tensor, ...],
                       last_hidden: torch.Tensor, stats: Any) -> dict[str, Any]:
        """The ``decomposition`` field, or null with ``decomposition_note`` saying why."""
        structure, parts = self.reading.blocks, getattr(hidden, "parts", None)
        if structure is None or parts is None:
            return {"decomposition": None, "decomposition_note": self.reading.blocks_note or
                    "the block parts were not captured in this forward pass"}
        tokens = attributed_tokens(stats, encoded.input_ids, encoded.target_id)
        known = self._decomposed
        if known is not None and known[0] is hidden and known[1] == tokens:
            return known[2]
        try:
            with torch.no_grad():
                field = decompose(structure, self.head, hidden, last_hidden, parts, tokens,
                                  _tolerance(self.loaded.model))
        except LensReportError as exc:
            note = f"{self.facts.get('architecture')}: no direct logit attribution: {exc}"
            log.info("model '%s', prompt '%s': %s", self.name, encoded.name, note)
            self._decomposed = (hidden, tokens, {"decomposition": None,
                                                 "decomposition_note": note})
            return self._decomposed[2]
        if structure.heads_note is not None:
            field["heads_note"] = structure.heads_note
        self._decomposed = (hidden, tokens, {"decomposition": field})
        return self._decomposed[2]
