"""Results documents (versioned JSON): one per (model, prompt, lens) and per (corpus, model, lens).

Token strings appear once, in ``vocab``; every other field holds ids. Floats are rounded
(probabilities to 4 significant digits, tiny ones included; nats to 4 decimals). In memory a
document holds lists; on disk (schema 3, :func:`dumps`/:func:`loads`) every numeric field is
one packed array (:func:`pack_grid`: integer codes that keep exactly that precision,
deflated, base64), so a document reads back equal to what was written. Documents
are written by the engine, kept in the store (store.py) under their content key
(identity.py), and read by the site and the notebook API.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
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


def _decimals(array: np.ndarray) -> Any:
    """Nats, and the trajectories' probabilities, at 4 decimals (NaN: null)."""
    return [[None if v != v else round(v, 4) for v in row] for row in array.tolist()]


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
        "entropy": spread(_decimals(stats.entropy)),
        "kl_to_final": spread(_decimals(stats.kl_to_final)),
        "next_token_prob": spread([[significant(v) if t < last else None
                                    for t, v in enumerate(row)]
                                   for row in stats.next_token_prob.tolist()]),
        "next_token_rank": spread([[v if t < last else None for t, v in enumerate(row)]
                                   for row in stats.next_token_rank.tolist()]),
        "target_prob": None if stats.target_prob is None else spread(_probs(stats.target_prob)),
        "target_rank": None if stats.target_rank is None else spread(_ints(stats.target_rank)),
        "tracked_ids": [ids.tolist() for ids in stats.tracked_ids],
        "tracked_probs": [spread(_decimals(probs)) for probs in stats.tracked_probs],
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


# Schema 3's packed arrays (see README, "Results JSON"): a numeric field is one object
# {"codec", "shape", "null_rows", "zlib"}: its values in row-major order as little-endian
# uint32 codes, stored as byte planes (every value's lowest byte, then the next…), deflated
# (zlib) and base64-encoded. Rows in ``null_rows`` (a lens that does not cover them) are not
# stored; NULL_CODE is a missing value. The codecs keep the documented precision exactly:
#   int     the integer itself (ids, ranks)
#   prob4   a probability at 4 significant digits, m·10^(e−3) with 1000 ≤ m ≤ 9999, e ≤ 0:
#           1 + 9000·(−e) + (m − 1000); 0 is 0.0 (so 1.4e-45 survives, as float32 has it)
#   fixed4  a number at 4 decimals (nats): round(v·10⁴), zigzag-mapped so −0.0001 fits
#   fixed5  a number at 5 decimals (logits: a decomposition's components), likewise
#   fixed2  a number at 2 decimals (a page's first view: entropy as its hover shows it)
NULL_CODE = 0xFFFFFFFF
CODECS = ("int", "prob4", "fixed2", "fixed4", "fixed5")
_FIXED = {"fixed2": 100, "fixed4": 10_000, "fixed5": 100_000}  # codec: its integers' scale
_EXACT_POWERS = 22  # 10**k is an exact double up to here, so m / 10**k is correctly rounded


def _prob4_codes(values: np.ndarray) -> np.ndarray:
    """Codes of probabilities already at 4 significant digits (NaN: NULL_CODE)."""
    codes = np.full(values.shape, NULL_CODE, dtype=np.uint64)
    finite = ~np.isnan(values)
    if np.any(values[finite] < 0) or np.any(values[finite] >= 9.9995):
        raise ValueError("a probability outside [0, 1]")
    positive = finite & (values > 0)
    v = values[positive]
    e = np.floor(np.log10(v)).astype(np.int64)
    m = np.rint(v / 10.0 ** (e - 3)).astype(np.int64)
    e = np.where(m >= 10000, e + 1, np.where(m < 1000, e - 1, e))
    m = np.rint(v / 10.0 ** (e - 3)).astype(np.int64)
    if np.any(e > 0) or np.any(e < -400):
        raise ValueError("a probability outside [0, 1]")
    codes[positive] = 1 + 9000 * (-e) + (m - 1000)
    codes[finite & (values == 0)] = 0
    return codes


def _prob4_values(codes: np.ndarray) -> list[Any]:
    """The probabilities of :func:`_prob4_codes`: exactly the doubles ``significant`` gives
    (a quotient of exact doubles is correctly rounded; below 1e-19 the decimal is read)."""
    present = codes != NULL_CODE
    c = np.where(present & (codes > 0), codes - 1, 0)
    e, m = -(c // 9000), 1000 + c % 9000
    power = np.minimum(3 - e, _EXACT_POWERS)
    values = np.where(present & (codes > 0), m / 10.0 ** power, 0.0)
    out: list[Any] = values.tolist()
    for i in np.flatnonzero(present & (3 - e > _EXACT_POWERS)).tolist():
        out[i] = float(f"{m[i]}e{e[i] - 3}")  # rare
    for i in np.flatnonzero(~present).tolist():
        out[i] = None
    return out


def _encode(values: Any, codec: str) -> np.ndarray:
    """A codec's codes of flat values (a list or an object array; None: missing), in numpy:
    packing is on every build's path (a decomposition is ~10⁵ numbers)."""
    cells = np.asarray(values, dtype=object).reshape(-1)
    missing = np.equal(cells, None)
    numbers = np.where(missing, 0, cells).astype(np.float64)
    if codec == "prob4":
        numbers[missing] = math.nan
        return _prob4_codes(numbers)
    if codec in _FIXED:
        scaled = numbers * _FIXED[codec]  # then round half to even, as round() does
        if not np.all(np.abs(scaled) < 2**31):
            raise ValueError(f"a value {codec} cannot hold (too large, or not a number)")
        ints = np.rint(scaled).astype(np.int64)
        codes = ((ints << 1) ^ (ints >> 63)).astype(np.uint64)
    else:
        if np.any(numbers < 0):
            raise ValueError("a negative id or rank")
        codes = numbers.astype(np.uint64)
    if np.any(codes >= NULL_CODE):
        raise ValueError(f"a value too large for {codec}")
    codes[missing] = NULL_CODE
    return codes


def _decode(codes: np.ndarray, codec: str) -> list[Any]:
    if codec == "prob4":
        return _prob4_values(codes)
    ints = codes.astype(np.int64)
    out: list[Any] = (((ints >> 1) ^ -(ints & 1)) / _FIXED[codec] if codec in _FIXED
                      else ints).tolist()
    for i in np.flatnonzero(codes == NULL_CODE).tolist():
        out[i] = None
    return out


def pack_values(values: Any, codec: str) -> str:
    """Values (None: missing; any nesting, flattened) as a codec's uint32 codes, byte planes, zlib, base64."""
    codes = _encode(values, codec).astype("<u4")
    planes = codes.view(np.uint8).reshape(-1, 4).T.tobytes()
    return base64.b64encode(zlib.compress(planes, 6)).decode("ascii")  # 9: 3x slower, 0.6 % smaller


def unpack_values(data: Any, codec: str, count: int) -> list[Any]:
    """The ``count`` values of :func:`pack_values`; ValueError when ``data`` is not that."""
    if codec not in CODECS or not isinstance(data, str):
        raise ValueError("not a packed array")
    raw = base64.b64decode(data.encode("ascii"), validate=True)
    inflate = zlib.decompressobj()
    planes = inflate.decompress(raw, 4 * count + 1)  # never more than the shape needs
    if len(planes) != 4 * count or not inflate.eof:
        raise ValueError(f"{'more' if len(planes) > 4 * count or not inflate.eof else 'fewer'}"
                         f" values than its shape holds ({count})")
    codes = np.frombuffer(planes, dtype=np.uint8).reshape(4, count).T.copy().view("<u4")
    return _decode(codes.reshape(-1).astype(np.int64), codec)


def _nest(values: list[Any], shape: list[int]) -> list[Any]:
    return np.array(values, dtype=object).reshape(shape).tolist() if len(shape) > 1 else values


def pack_grid(grid: list[Any], codec: str) -> dict[str, Any]:
    """A [row][position](…) field (a null row: a row the lens does not cover) as one packed
    array; any numeric field of equal-length cells packs this way (new fields too)."""
    rows = [row for row in grid if row is not None]
    inner = _shape(rows[0]) if rows else []
    shape = [len(grid), *inner]
    values = np.array(rows, dtype=object)  # a deeper or shallower array where cells differ
    if list(values.shape) != [len(rows), *inner]:
        raise ValueError("cells of different lengths")
    packed: dict[str, Any] = {"codec": codec, "shape": shape}
    nulls = [r for r, row in enumerate(grid) if row is None]
    if nulls:
        packed["null_rows"] = nulls
    packed["zlib"] = pack_values(values, codec)
    return packed


def _sizes(values: list[Any], most: int) -> bool:
    """Every value an int (not a bool) from 0 to ``most``."""
    return all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= most
               for n in values)


def _shape(value: Any) -> list[int]:
    return [len(value), *_shape(value[0])] if isinstance(value, list) and value else (
        [0] if isinstance(value, list) else [])


def unpack_grid(packed: Any) -> list[Any]:
    """The lists of :func:`pack_grid` (ValueError, saying what, when it is not one)."""
    if not isinstance(packed, dict) or set(packed) - {"codec", "shape", "null_rows", "zlib"}:
        raise ValueError("not a packed array")
    shape, nulls = packed.get("shape"), packed.get("null_rows", [])
    if not isinstance(shape, list) or not shape or not _sizes(shape, 10**7):
        raise ValueError("shape: expected a list of sizes")
    if not isinstance(nulls, list) or not all(isinstance(r, int) and 0 <= r < shape[0]
                                              for r in nulls) or len(set(nulls)) != len(nulls):
        raise ValueError("null_rows: expected row numbers below shape[0]")
    cell = math.prod(shape[1:])
    rows = shape[0] - len(nulls)
    if rows * cell > 10**9:
        raise ValueError("shape: too large")
    values = unpack_values(packed.get("zlib"), packed.get("codec"), rows * cell)
    stored = iter(_nest(values, [rows, *shape[1:]]) if rows else [])
    null_set = set(nulls)
    return [None if r in null_set else next(stored) for r in range(shape[0])]


# The trajectories' probabilities at 4 decimals, what their chart shows (0.01 %): a rare
# token's are 0 there, as on the chart; per-cell probabilities (top-k, next token, target,
# groups) keep 4 significant digits. At 4 significant digits they would be most of a site.
TRACKED_CODEC = "fixed4"
TRACKED_ORDER = "position, tracked id, layer"
LAYERS_FIRST = "position, layer, tracked id"  # the order before (schema 3 documents read)


def _pack_tracked(document: dict[str, Any]) -> dict[str, Any]:
    """``tracked_probs`` as one packed array, positions × that position's tracked ids ×
    layers in that order (a token's probabilities by depth side by side: 17 % fewer bytes
    than layers before ids), missing values at rows the lens does not cover."""
    blocks = [np.array([[None] * len(ids) if row is None else row for row in rows],
                       dtype=object).reshape(len(rows), len(ids)).T.reshape(-1)
              for ids, rows in zip(document["tracked_ids"], document["tracked_probs"])]
    values = np.concatenate(blocks) if blocks else np.zeros(0, dtype=object)
    return {"codec": TRACKED_CODEC, "order": TRACKED_ORDER,
            "zlib": pack_values(values, TRACKED_CODEC)}


def _unpack_tracked(document: dict[str, Any]) -> list[Any]:
    """The lists of a packed ``tracked_probs`` (schema 2's float16, or schema 3's codes in
    either order); a row of missing values (an uncovered row) is null."""
    packed = document["tracked_probs"]
    layers = len(document["layers"])
    tracked = document["tracked_ids"]
    total = layers * sum(len(ids) for ids in tracked)
    if "zlib" in packed:
        values = unpack_values(packed["zlib"], packed.get("codec"), total)
    else:
        half = np.frombuffer(base64.b64decode(packed["base64"], validate=True), dtype="<f2")
        if half.size != total:
            raise ValueError("the array does not fit the tracked tokens")
        values = [None if v != v else v for v in half.astype(np.float64).tolist()]
    by_token = packed.get("order") == TRACKED_ORDER
    if not by_token and packed.get("order", LAYERS_FIRST) != LAYERS_FIRST:
        raise ValueError(f"order: expected {TRACKED_ORDER!r}")
    out, start = [], 0
    for ids in tracked:
        block = values[start:start + layers * len(ids)]
        start += layers * len(ids)
        rows = [block[layer::layers] if by_token else
                block[layer * len(ids):(layer + 1) * len(ids)] for layer in range(layers)]
        out.append([None if ids and all(v is None for v in row) else row for row in rows])
    return out


def _pack_ids(lists: list[list[int]]) -> dict[str, Any]:
    """Per-position lists of token ids (``tracked_ids``) as one packed int array and each
    position's count."""
    return {"codec": "int", "counts": [len(ids) for ids in lists],
            "zlib": pack_values([i for ids in lists for i in ids], "int")}


def _unpack_ids(packed: dict[str, Any]) -> list[list[int]]:
    counts = packed["counts"]
    if not isinstance(counts, list) or not _sizes(counts, 10**6):
        raise ValueError("counts: expected a list of sizes")
    values = unpack_values(packed["zlib"], packed.get("codec"), sum(counts))
    out, start = [], 0
    for n in counts:
        out.append(values[start:start + n])
        start += n
    return out


# The packed fields of a prompt document and their codecs; a token group's fields likewise.
GRID_CODECS = {"topk_ids": "int", "topk_probs": "prob4", "entropy": "fixed4",
               "kl_to_final": "fixed4", "next_token_prob": "prob4", "next_token_rank": "int",
               "target_prob": "prob4", "target_rank": "int"}
GROUP_CODECS = {"prob": "prob4", "rank": "int", "top_ids": "int", "top_probs": "prob4"}


# A decomposition's numbers (lens/decompose.py: components at 5 decimals, heads at 4), each a
# grid whose last axis is a position's attributed tokens, padded with missing values to the
# widest position's count (token_ids gives each position's own).
DECOMPOSITION_CODECS = {"attrs": "fixed5", "heads.attrs": "fixed4", "heads.bias": "fixed4"}


def _ragged(grid: Any, depth: int, counts: list[int], width: int) -> Any:
    """``grid`` with each position's list (at ``depth``) padded with None to ``width``."""
    if depth == 0:
        return [row + [None] * (width - len(row)) for row in grid]
    return [_ragged(item, depth - 1, counts, width) for item in grid]


def _trimmed(grid: Any, depth: int, counts: list[int]) -> Any:
    if depth == 0:
        if len(grid) != len(counts):
            raise ValueError("not one list per position")
        return [row[:n] for row, n in zip(grid, counts)]
    return [_trimmed(item, depth - 1, counts) for item in grid]


def _decomposition_places(field: dict[str, Any]) -> list[tuple[dict[str, Any], str, str, int]]:
    """(holder, key, codec name, depth of the position axis) of a decomposition's grids."""
    places = [(field, "attrs", "attrs", 1)]
    heads = field.get("heads")
    if isinstance(heads, dict):
        places.append((heads, "attrs", "heads.attrs", 2))
        if heads.get("bias") is not None:
            places.append((heads, "bias", "heads.bias", 1))
    return places


def _pack_decomposition(field: dict[str, Any]) -> dict[str, Any]:
    counts = [len(ids) for ids in field["token_ids"]]
    width = max(counts, default=0)
    out = {**field}
    if isinstance(field.get("heads"), dict):
        out["heads"] = {**field["heads"]}
    for holder, key, name, depth in _decomposition_places(out):
        holder[key] = pack_grid(_ragged(holder[key], depth, counts, width),
                                DECOMPOSITION_CODECS[name])
    return out


def _unpack_decomposition(field: dict[str, Any]) -> None:
    counts = [len(ids) for ids in field["token_ids"]]
    for holder, key, _name, depth in _decomposition_places(field):
        if isinstance(holder[key], dict):
            holder[key] = _trimmed(unpack_grid(holder[key]), depth, counts)


def encoded(document: dict[str, Any], codecs: dict[str, str] | None = None
            ) -> dict[str, Any]:
    """The document as it is written (schema 3): every numeric field a packed array, what
    pages inline too (a first view of figures.py included, with ``codecs`` overriding
    GRID_CODECS' precision); a corpus document is unchanged."""
    if "prompt" not in document or "schema_version" not in document:
        return document
    out = {**document, "schema_version": SCHEMA_VERSION}
    for name, codec in {**GRID_CODECS, **(codecs or {})}.items():
        if isinstance(document.get(name), list):
            out[name] = pack_grid(document[name], codec)
    if isinstance(document.get("tracked_probs"), list):
        out["tracked_probs"] = _pack_tracked(document)
    if isinstance(document.get("tracked_ids"), list):
        out["tracked_ids"] = _pack_ids(document["tracked_ids"])
    if document.get("target_groups"):
        out["target_groups"] = [
            {**group, **{name: pack_grid(group[name], codec)
                         for name, codec in GROUP_CODECS.items()
                         if isinstance(group.get(name), list)}}
            for group in document["target_groups"]]
    if isinstance(document.get("decomposition"), dict):
        out["decomposition"] = _pack_decomposition(document["decomposition"])
    return out


def dumps(document: dict[str, Any]) -> str:
    """Compact, deterministic JSON (no NaN: missing values are null) of :func:`encoded`."""
    return json.dumps(encoded(document), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def decoded(document: Any) -> Any:
    """A document with its packed arrays as lists (schema 1 has none, schema 2 only
    ``tracked_probs``); InvalidDocument, naming the field, where one is not as written."""
    if not isinstance(document, dict):
        return document
    places = [(document, name, name) for name in GRID_CODECS]
    groups = document.get("target_groups")
    if isinstance(groups, list):
        places += [(group, name, f"target_groups[{i}].{name}") for i, group in enumerate(groups)
                   if isinstance(group, dict) for name in GROUP_CODECS]
    for holder, name, where in places:
        if isinstance(holder.get(name), dict):
            try:
                holder[name] = unpack_grid(holder[name])
            except (KeyError, TypeError, ValueError, AttributeError, zlib.error) as exc:
                raise InvalidDocument(f"{where}: expected a packed array "
                                      f"({first_line(exc, 80)})") from None
    if isinstance(document.get("tracked_ids"), dict):
        try:
            document["tracked_ids"] = _unpack_ids(document["tracked_ids"])
        except (KeyError, TypeError, ValueError, AttributeError, zlib.error) as exc:
            raise InvalidDocument("tracked_ids: expected a packed array of token ids "
                                  f"({first_line(exc, 80)})") from None
    if isinstance(document.get("tracked_probs"), dict):
        try:
            document["tracked_probs"] = _unpack_tracked(document)
        except (KeyError, TypeError, ValueError, AttributeError, zlib.error) as exc:
            raise InvalidDocument("tracked_probs: expected a packed array of every tracked "
                                  f"token at every row ({first_line(exc, 80)})") from None
    field = document.get("decomposition")
    if isinstance(field, dict) and isinstance(field.get("token_ids"), list):
        try:
            _unpack_decomposition(field)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError,
                zlib.error) as exc:
            raise InvalidDocument("decomposition: expected packed arrays of every component "
                                  f"at every position ({first_line(exc, 80)})") from None
    return document


def loads(text: str) -> Any:
    """A document from :func:`dumps` (or of schema 1 or 2), with its arrays as lists;
    ValueError (InvalidDocument) when a packed array does not fit the document."""
    return decoded(json.loads(text))


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
