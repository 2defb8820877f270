"""Results documents (versioned JSON): one per (model, prompt, lens) and per (corpus, model, lens).

Token strings appear once, in ``vocab``; every other field holds ids. Floats are rounded
(probabilities to 4 significant digits, nats to 4 decimals) to keep pages small. The
largest field, ``tracked_probs`` (every tracked token at every layer), is float16: in memory
as lists of its exact float16 values, on disk one base64 array (:func:`dumps`/:func:`loads`),
so a document reads back equal to what was written. Documents
are written by the engine, kept in the store (store.py) under their content key
(identity.py), and read by the site and the notebook API.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import LensReportError, first_line
from .identity import READABLE_SCHEMAS, SCHEMA_VERSION
from .validation import InvalidDocument, check_prompt_document


def significant(value: float, digits: int = 4) -> float | None:
    """``value`` to ``digits`` significant digits (how documents and pages store
    probabilities: a rare token's is far below 1e-6); None for NaN."""
    if value != value:  # NaN
        return None
    return float(f"{value:.{digits}g}")


def _probs(array: np.ndarray) -> Any:
    if array.ndim > 1:
        return [_probs(row) for row in array]
    return [significant(v) for v in array.tolist()]


def _nats(array: np.ndarray) -> Any:
    return [[round(v, 4) for v in row] for row in array.tolist()]


def _half(array: np.ndarray) -> Any:
    """Float16 values as exact Python floats (NaN: null), as stored on disk."""
    return [[None if v != v else v for v in row] for row in array.astype(np.float16).tolist()]


def _ints(array: np.ndarray) -> Any:
    return array.tolist()


def _generator() -> dict[str, str]:
    """The versions that wrote a document (recorded, never keyed: caches move between setups)."""
    import torch
    import transformers

    return {"lensreport": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__}


def _spread(values: list[Any], rows: tuple[int, ...] | None, count: int) -> list[Any]:
    """Per-row values of the covered ``rows`` placed among ``count`` rows, null elsewhere."""
    if rows is None:
        return values
    placed: list[Any] = [None] * count
    for row, value in zip(rows, values):
        placed[row] = value
    return placed


def make_document(*, key: str, model_facts: dict[str, Any], prompt: dict[str, Any],
                  lens: dict[str, Any], tokenizer: dict[str, Any], input_ids: list[int],
                  vocab: list[str], stats: Any, rows: tuple[int, ...] | None = None,
                  groups: list[tuple[str, list[int]]] = (), generated_from: int | None = None,
                  template_mask: list[bool] | None = None) -> dict[str, Any]:
    """Assemble the LensResult JSON document (see README, "Results JSON").

    ``stats`` holds the rows the lens covers: ``rows`` (ascending, ending with L), or every
    row when None. A row the lens does not cover is null in every per-row field, and in each
    position's ``tracked_probs``; ``lens.rows`` lists the covered ones.
    """
    layers = stats.entropy.shape[0]
    if rows is not None and len(rows) == rows[-1] + 1:
        rows = None  # every row
    count = layers if rows is None else rows[-1] + 1
    if rows is not None:
        lens = {**lens, "rows": list(rows)}

    def spread(values: list[Any]) -> list[Any]:
        return _spread(values, rows, count)
    used = set(input_ids) | set(stats.topk_ids.reshape(-1).tolist())
    if prompt.get("target_id") is not None:
        used.add(prompt["target_id"])
    for ids in stats.tracked_ids:
        used.update(ids.tolist())
    for _, ids in groups:
        used.update(ids)
    last = len(input_ids) - 1
    document = {
        "schema_version": SCHEMA_VERSION,
        "cache_key": key,
        "generator": _generator(),
        "model": model_facts,
        "tokenizer": tokenizer,
        "prompt": prompt,
        "lens": lens,
        "input_ids": input_ids,
        "input_tokens": [vocab[i] for i in input_ids],
        "layers": list(range(count)),
        "topk_ids": spread(_ints(stats.topk_ids)),
        "topk_probs": spread(_probs(stats.topk_probs)),
        "entropy": spread(_nats(stats.entropy)),
        "kl_to_final": spread(_nats(stats.kl_to_final)),
        "next_token_prob": spread([[significant(v) if t < last else None
                                    for t, v in enumerate(row)]
                                   for row in stats.next_token_prob.tolist()]),
        "next_token_rank": spread([[v if t < last else None for t, v in enumerate(row)]
                                   for row in stats.next_token_rank.tolist()]),
        "target_prob": None if stats.target_prob is None else spread(_probs(stats.target_prob)),
        "target_rank": None if stats.target_rank is None else spread(_ints(stats.target_rank)),
        "tracked_ids": [ids.tolist() for ids in stats.tracked_ids],
        "tracked_probs": [spread(_half(probs)) for probs in stats.tracked_probs],
        "target_groups": [
            {"name": name, "ids": list(ids), "prob": spread(_probs(group.prob)),
             "rank": spread(_ints(group.rank)), "top_ids": spread(_ints(group.top_ids)),
             "top_probs": spread(_probs(group.top_probs))}
            for (name, ids), group in zip(groups, stats.groups)],
        "generated_from": generated_from,
        "template_mask": template_mask,
        "vocab": {str(i): vocab[i] for i in sorted(used)},
    }
    return document


def corpus_document(*, key: str, corpus: dict[str, Any], model_facts: dict[str, Any],
                    lens: dict[str, Any], sums: Any) -> dict[str, Any]:
    """The curves JSON of one (corpus, model, lens) (see README, "Corpus curves");
    ``corpus`` describes the corpus (name, slug, source, split, column, context, max_tokens)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "cache_key": key,
        "generator": _generator(),
        "corpus": {**corpus, "documents": len(sums.documents)},
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


TRACKED_ORDER = "position, layer, tracked id"


def _pack_tracked(document: dict[str, Any]) -> dict[str, Any]:
    """``tracked_probs`` as one little-endian float16 array in base64, positions × layers ×
    that position's tracked ids in that order (NaN at rows the lens does not cover)."""
    values: list[float] = []
    for ids, rows in zip(document["tracked_ids"], document["tracked_probs"]):
        for row in rows:
            values.extend([math.nan] * len(ids) if row is None else
                          [math.nan if v is None else v for v in row])
    data = np.asarray(values, dtype="<f2").tobytes()
    return {"dtype": "float16", "order": TRACKED_ORDER,
            "base64": base64.b64encode(data).decode("ascii")}


def _unpack_tracked(document: dict[str, Any]) -> list[Any]:
    """The lists of :func:`_pack_tracked`'s array (a row of NaN, an uncovered row: null)."""
    packed = document["tracked_probs"]
    values = np.frombuffer(base64.b64decode(packed["base64"], validate=True), dtype="<f2")
    layers = len(document["layers"])
    out, start = [], 0
    for ids in document["tracked_ids"]:
        block = values[start:start + layers * len(ids)].reshape(layers, len(ids))
        start += block.size
        out.append([None if len(ids) and bool(np.isnan(row).all()) else
                    [None if v != v else v for v in row.astype(np.float64).tolist()]
                    for row in block])
    if start != values.size:
        raise ValueError("the array is longer than the tracked tokens")
    return out


def encoded(document: dict[str, Any]) -> dict[str, Any]:
    """The document as it is written: a prompt document's ``tracked_probs`` as one float16
    array (schema 2); what pages inline, too."""
    if isinstance(document.get("tracked_probs"), list) and "schema_version" in document:
        return {**document, "schema_version": SCHEMA_VERSION,
                "tracked_probs": _pack_tracked(document)}
    return document


def dumps(document: dict[str, Any]) -> str:
    """Compact, deterministic JSON (no NaN: missing values are null) of :func:`encoded`."""
    return json.dumps(encoded(document), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def loads(text: str) -> Any:
    """A document from :func:`dumps` (or of schema 1), with ``tracked_probs`` as lists;
    ValueError (InvalidDocument) when the packed array does not fit the document."""
    document = json.loads(text)
    if isinstance(document, dict) and isinstance(document.get("tracked_probs"), dict):
        try:
            document["tracked_probs"] = _unpack_tracked(document)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidDocument("tracked_probs: expected a float16 base64 array of every "
                                  "tracked token at every row") from None
    return document


REQUIRED_FIELDS = ("model", "prompt", "lens", "input_ids", "layers", "topk_ids", "topk_probs",
                   "entropy", "kl_to_final", "vocab")


def read_document(path: Path) -> dict[str, Any]:
    """A saved results document, checked enough that a page can be drawn from it."""
    try:
        document = loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LensReportError(f"{path}: results file not found") from None
    except (OSError, ValueError) as exc:
        raise LensReportError(f"{path}: not a lensreport results file "
                              f"({first_line(exc, 100)})") from None
    if not isinstance(document, dict) or document.get("schema_version") not in READABLE_SCHEMAS:
        raise LensReportError(f"{path}: not a lensreport results file of schema version "
                              f"{' or '.join(map(str, READABLE_SCHEMAS))}; save it again with "
                              "this version")
    missing = [field for field in REQUIRED_FIELDS if field not in document]
    if missing:
        raise LensReportError(f"{path}: results file lacks {', '.join(missing)}")
    try:
        check_prompt_document(document)
    except InvalidDocument as exc:
        raise LensReportError(f"{path}: not a valid lensreport results file: {exc}; save it "
                              "again with run_lens or take it from a site's data/ folder") \
            from None
    return document
