"""LensResult documents (versioned JSON), their content keys, and atomic file writes.

One JSON document per (model, prompt, lens), and one per (corpus, model, lens). Token strings
appear once, in ``vocab``; every other field holds ids. Floats are rounded (probabilities to
4 significant digits, nats to 4 decimals) to keep pages small. The key covers everything that
changes the numbers, so an unchanged run is never recomputed (the store is store.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__

log = logging.getLogger("lensreport")

SCHEMA_VERSION = 1
# Bump when the lens computation changes its numbers, so cached results are recomputed
# (library versions are recorded in each document, not keyed, so caches move between setups).
LENS_IMPLEMENTATION = 2


def _sig(value: float, digits: int = 4) -> float | None:
    if value != value:  # NaN
        return None
    return float(f"{value:.{digits}g}")


def _probs(array: np.ndarray) -> Any:
    return [_probs(row) for row in array] if array.ndim > 1 else [_sig(v) for v in array.tolist()]


def _nats(array: np.ndarray) -> Any:
    return [[round(v, 4) for v in row] for row in array.tolist()]


def _ints(array: np.ndarray) -> Any:
    return array.tolist()


def cache_key(material: dict[str, Any]) -> str:
    blob = json.dumps({"schema": SCHEMA_VERSION, "lens": LENS_IMPLEMENTATION, **material},
                      sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def make_document(*, key: str, model_facts: dict[str, Any], prompt: dict[str, Any],
                  lens: dict[str, Any], tokenizer: dict[str, Any], input_ids: list[int],
                  vocab: list[str], stats: Any) -> dict[str, Any]:
    """Assemble the LensResult JSON document (see README, "Results JSON")."""
    import torch
    import transformers

    layers = stats.entropy.shape[0]
    used = set(input_ids) | set(stats.topk_ids.reshape(-1).tolist())
    if prompt.get("target_id") is not None:
        used.add(prompt["target_id"])
    for ids in stats.tracked_ids:
        used.update(ids.tolist())
    last = len(input_ids) - 1
    document = {
        "schema_version": SCHEMA_VERSION,
        "cache_key": key,
        "generator": {"lensreport": __version__, "torch": torch.__version__,
                      "transformers": transformers.__version__},
        "model": model_facts,
        "tokenizer": tokenizer,
        "prompt": prompt,
        "lens": lens,
        "input_ids": input_ids,
        "input_tokens": [vocab[i] for i in input_ids],
        "layers": list(range(layers)),
        "topk_ids": _ints(stats.topk_ids),
        "topk_probs": _probs(stats.topk_probs),
        "entropy": _nats(stats.entropy),
        "kl_to_final": _nats(stats.kl_to_final),
        "next_token_prob": [[_sig(v) if t < last else None for t, v in enumerate(row)]
                            for row in stats.next_token_prob.tolist()],
        "next_token_rank": [[v if t < last else None for t, v in enumerate(row)]
                            for row in stats.next_token_rank.tolist()],
        "target_prob": None if stats.target_prob is None else _probs(stats.target_prob),
        "target_rank": None if stats.target_rank is None else _ints(stats.target_rank),
        "tracked_ids": [ids.tolist() for ids in stats.tracked_ids],
        "tracked_probs": [_probs(probs) for probs in stats.tracked_probs],
        "vocab": {str(i): vocab[i] for i in sorted(used)},
    }
    return document


def corpus_document(*, key: str, corpus: Any, model_facts: dict[str, Any],
                    lens: dict[str, Any], sums: Any) -> dict[str, Any]:
    """The curves JSON of one (corpus, model, lens) (see README, "Corpus curves")."""
    import torch
    import transformers

    source = corpus.source
    return {
        "schema_version": SCHEMA_VERSION,
        "cache_key": key,
        "generator": {"lensreport": __version__, "torch": torch.__version__,
                      "transformers": transformers.__version__},
        "corpus": {"name": corpus.name, "slug": corpus.slug,
                   "source": source.path.name if source.path else source.dataset,
                   "split": None if source.path else source.split, "column": source.column,
                   "context": corpus.context, "max_tokens": corpus.max_tokens,
                   "documents": len(sums.documents)},
        "model": model_facts,
        "lens": lens,
        "scored_tokens": sums.scored_tokens,
        "scored_bytes": sums.scored_bytes,
        "layers": list(range(sums.rows)),
        **sums.curves(),
    }


def restamp(document: dict[str, Any], model_name: str, model_slug: str, prompt_name: str,
            prompt_slug: str) -> dict[str, Any]:
    """Names are not part of the cache key (renaming never recomputes); set the current ones."""
    document["model"]["name"], document["model"]["slug"] = model_name, model_slug
    document["prompt"]["name"], document["prompt"]["slug"] = prompt_name, prompt_slug
    return document


def dumps(document: dict[str, Any]) -> str:
    """Compact, deterministic JSON (no NaN: missing values are null)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
