"""One loaded model and everything needed to run the lens on its prompts.

Kept apart from build.py so that a build served entirely from the cache never imports torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import models as model_refs
from .errors import LensReportError, ManifestError
from .heads import LensHead, find_head, verify_head
from .lens import lens_inputs, run_lens
from .manifest import ModelSpec, PromptSpec
from .results import make_document
from .tokens import display_vocab, tokenizer_kind

log = logging.getLogger("lensreport")

VERIFY_TEXT = "The quick brown fox"
# The hidden states of all layers, and a few working copies, must fit well within memory.
MEMORY_FRACTION = 0.25


@dataclass
class EncodedPrompt:
    input_ids: list[int]
    target_id: int | None
    target_token: str | None
    warnings: list[str] = field(default_factory=list)


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3


@dataclass
class ModelSession:
    loaded: model_refs.LoadedModel
    head: LensHead
    vocab: list[str]
    tokenizer_info: dict[str, Any]

    @classmethod
    def open(cls, spec: ModelSpec, resolved: model_refs.ResolvedModel) -> "ModelSession":
        loaded = model_refs.load(spec, resolved)
        head = find_head(loaded.model, spec.final_norm, spec.unembedding)
        probe = loaded.tokenizer(VERIFY_TEXT, return_tensors="pt").input_ids.to(loaded.device)
        difference = verify_head(loaded.model, head, probe)
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
        layers = (facts["num_layers"] or 1) + 1
        hidden = facts["hidden_size"] or self.head.weight.shape[1]
        per_token = layers * hidden * 4 * 4
        by_memory = int(_available_memory() * MEMORY_FRACTION // per_token)
        return min(facts["max_context"] or by_memory, by_memory)

    def prepare(self, prompt: PromptSpec, manifest_path: Path) -> EncodedPrompt:
        """Tokenize and check a prompt against this model, before any lens work starts."""
        name = self.loaded.spec.name
        tokenizer = self.loaded.tokenizer
        ids = tokenizer(prompt.text)["input_ids"]
        limit = self.max_tokens()
        if len(ids) > limit:
            raise ManifestError(manifest_path, prompt.line,
                                f"prompt '{prompt.name}': {len(ids)} tokens for model '{name}', "
                                f"which accepts at most {limit} here (context length and "
                                "memory); shorten the prompt")
        encoded = EncodedPrompt(ids, None, None)
        if prompt.target is not None:
            target_ids = tokenizer.encode(prompt.target, add_special_tokens=False)
            if not target_ids:
                raise ManifestError(manifest_path, prompt.line,
                                    f"prompt '{prompt.name}'.target {prompt.target!r} is not in "
                                    f"the vocabulary of model '{name}'")
            if len(target_ids) > 1:
                shown = ", ".join(repr(self.vocab[i]) for i in target_ids)
                encoded.warnings.append(
                    f"prompt '{prompt.name}': target {prompt.target!r} is {len(target_ids)} "
                    f"tokens for model '{name}' ({shown}); tracking the first")
            encoded.target_id = target_ids[0]
            encoded.target_token = self.vocab[target_ids[0]]
        return encoded

    def run(self, prompt: PromptSpec, encoded: EncodedPrompt, key: str) -> dict[str, Any]:
        spec = self.loaded.spec
        model = self.loaded.model
        input_ids = torch.tensor([encoded.input_ids], device=self.loaded.device)
        try:
            with torch.no_grad():
                output = model.base_model(input_ids=input_ids, output_hidden_states=True)
                inputs = lens_inputs(tuple(h[0] for h in output.hidden_states),
                                     output.last_hidden_state[0], self.head, spec.lens.kind)
                del output
                stats = run_lens(inputs, self.head, input_ids[0], spec.lens.top_k,
                                 encoded.target_id)
        except torch.cuda.OutOfMemoryError as exc:
            raise LensReportError(f"model '{spec.name}', prompt '{prompt.name}': out of GPU "
                                  "memory; shorten the prompt or use device: cpu") from exc
        except MemoryError as exc:
            raise LensReportError(f"model '{spec.name}', prompt '{prompt.name}': out of memory; "
                                  "shorten the prompt") from exc
        document = make_document(
            key=key, model_facts=dict(self.facts), tokenizer=self.tokenizer_info,
            prompt={"name": prompt.name, "slug": prompt.slug, "text": prompt.text,
                    "target": prompt.target, "target_id": encoded.target_id,
                    "target_token": encoded.target_token},
            lens={"kind": spec.lens.kind, "top_k": spec.lens.top_k, **self.head.description},
            input_ids=encoded.input_ids, vocab=self.vocab, stats=stats)
        document["warnings"] = encoded.warnings  # kept, so a cached run warns again
        return document
