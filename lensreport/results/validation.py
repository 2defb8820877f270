"""Checks of a results document read from outside (a `results:` file, the results store).

A saved document is untrusted input: its fields reach file names (the lens kind), pages
(names, tokens, numbers), keys and the browser's reader. Before anything uses one, every field
that is there must have the type and the shape the writer gives it (documents.py); the first
that does not is reported by its place (``entropy[3][2]``), so the error names the fix.
"""

from __future__ import annotations

import math
import re
from itertools import chain
from typing import Any, Callable

import numpy as np

# A lens kind's name: it becomes a file-name suffix (``<prompt>.<kind>.json``), so letters,
# digits and '_' only (the registry holds its kinds to this too: lens/kinds/__init__.py).
LENS_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")

Check = Callable[[Any], bool]


class InvalidDocument(ValueError):
    """A field of a document that is not what the writer writes (the message says where)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


# Fast paths of the per-value checks, for the lists of numbers that are most of a document
# (10⁵ values with a decomposition): types compared and finiteness tested at C speed; where
# one says False the values are checked one by one, which finds and names the bad one.
_NUMBER_TYPES = frozenset({int, float, type(None)})
_COUNT_TYPES = frozenset({int, type(None)})


def _numbers(items: list[Any], nulls: bool = True) -> bool:
    """Every item an int or a finite float (or None where ``nulls``)."""
    kinds = set(map(type, items))
    if not kinds <= _NUMBER_TYPES or (not nulls and type(None) in kinds):
        return False
    if float not in kinds:
        return True
    values = np.array(items, dtype=np.float64)  # None -> NaN: so many NaN as None
    return int(np.isnan(values).sum()) == items.count(None) and not np.isinf(values).any()


def _counts(items: list[Any]) -> bool:
    """Every item None or an int ≥ 0."""
    return set(map(type, items)) <= _COUNT_TYPES and not (
        np.array(items, dtype=np.float64) < 0).any()


_FAST: dict[Check, Callable[[list[Any]], bool]] = {_is_number: _numbers, _is_count: _counts}


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _fail(where: str, expected: str) -> InvalidDocument:
    return InvalidDocument(f"{where}: expected {expected}")


def _grid(document: dict[str, Any], name: str, rows: int, columns: int, leaf: Check,
          expected: str, depth: int = 0) -> None:
    """A [row][position] field (``depth`` 1: [row][position][j]); a row may be null where the
    lens does not cover it, a value null where it has none."""
    value = document.get(name)
    if not isinstance(value, list) or len(value) != rows:
        raise _fail(name, f"a list of {rows} rows")
    for r, row in enumerate(value):
        if row is None:
            continue
        if not isinstance(row, list) or len(row) != columns:
            raise _fail(f"{name}[{r}]", f"null or a list of {columns} positions")
        fast = _FAST.get(leaf)
        if fast and (fast(row) if not depth else (all(type(cell) is list for cell in row)
                                                  and fast(list(chain.from_iterable(row))))):
            continue
        for t, cell in enumerate(row):
            items = cell if depth else [cell]
            if depth and not isinstance(cell, list):
                raise _fail(f"{name}[{r}][{t}]", f"a list of {expected}")
            for j, item in enumerate(items):
                if item is not None and not leaf(item):
                    place = f"{name}[{r}][{t}]" + (f"[{j}]" if depth else "")
                    raise _fail(place, expected)


_NO_TEXT = frozenset({int, float, bool, type(None)})  # a value of these types holds no text


def _strings(value: Any, where: str) -> None:
    """Every text in the document encodes as UTF-8 (a lone surrogate from a JSON escape
    would fail the site's writes: refuse it here, by its place)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidDocument(f"{where}: text with a lone surrogate (not valid "
                                  "Unicode)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _strings(key, f"{where} (a key)")
            _strings(item, f"{where}.{key}")
    elif isinstance(value, list) and not all(map(_NO_TEXT.__contains__, map(type, value))):
        for index, item in enumerate(value):  # (a list of numbers is skipped at C speed)
            _strings(item, f"{where}[{index}]")


def _field(document: dict[str, Any], where: str, name: str, check: Check, expected: str,
           required: bool = False) -> None:
    if name not in document:
        if required:
            raise InvalidDocument(f"{where}{name}: missing")
        return
    if not check(document[name]):
        raise _fail(f"{where}{name}", expected)


def check_prompt_document(document: Any) -> None:
    """Raise InvalidDocument at the first field of a prompt document that is not as written.

    Schemas 1, 2 and 3 alike: packed arrays (schema 3; schema 2's ``tracked_probs``) are
    unpacked by documents.decoded first, which refuses one that does not unpack by its field.
    """
    if not isinstance(document, dict):
        raise InvalidDocument("the document: expected a JSON object")
    _strings(document, "document")
    for name in ("model", "prompt", "lens"):
        _field(document, "", name, lambda v: isinstance(v, dict), "an object", required=True)
    model, prompt, lens = document["model"], document["prompt"], document["lens"]
    for key in ("name", "reference", "model_type", "architecture", "revision"):
        _field(model, "model.", key, _optional(_is_text), "a text")
    _field(prompt, "prompt.", "name", _optional(_is_text), "a text")
    _field(prompt, "prompt.", "text", _is_text, "a text", required=True)
    _field(prompt, "prompt.", "target", _optional(_is_text), "a text")
    _field(lens, "lens.", "kind", lambda v: isinstance(v, str) and LENS_KIND.fullmatch(v),
           "a lens kind's name (lowercase letters, digits and '_', such as logit)")
    _field(lens, "lens.", "top_k", lambda v: _is_int(v) and 1 <= v <= 1000,
           "an integer from 1 to 1000")
    _field(document, "", "input_ids", lambda v: isinstance(v, list) and len(v) > 0
           and all(_is_count(i) for i in v), "a non-empty list of token ids", required=True)
    positions = len(document["input_ids"])
    _field(document, "", "layers", lambda v: isinstance(v, list) and len(v) > 0
           and v == list(range(len(v))), "the list of rows 0, 1, …", required=True)
    rows = len(document["layers"])
    _field(document, "", "vocab", lambda v: isinstance(v, dict) and all(
        k.isdigit() and isinstance(s, str) for k, s in v.items()),
        "an object of token id -> text", required=True)
    _field(document, "", "input_tokens", lambda v: isinstance(v, list) and len(v) == positions
           and all(isinstance(s, str) for s in v), f"a list of {positions} texts")
    for name, leaf, expected, depth in (
            ("entropy", _is_number, "a number", 0), ("kl_to_final", _is_number, "a number", 0),
            ("topk_ids", _is_count, "token ids", 1), ("topk_probs", _is_number, "numbers", 1)):
        _grid(document, name, rows, positions, leaf, expected, depth)
    for name, leaf, expected in (("next_token_prob", _is_number, "a number"),
                                 ("next_token_rank", _is_count, "a rank"),
                                 ("target_prob", _is_number, "a number"),
                                 ("target_rank", _is_count, "a rank")):
        if document.get(name) is not None:
            _grid(document, name, rows, positions, leaf, expected)
    _check_tracked(document, rows, positions)
    _check_groups(document, rows, positions)
    _field(document, "", "row_depths", lambda v: isinstance(v, list) and len(v) == rows
           and all(_is_number(d) for d in v) and v == sorted(v) and v[0] == 0,
           f"a list of {rows} ascending depths from 0")
    _check_decomposition(document, positions)
    _field(document, "", "generated_from", _optional(lambda v: _is_count(v) and v < positions),
           f"null or a position below {positions}")
    _field(document, "", "template_mask", _optional(
        lambda v: isinstance(v, list) and len(v) == positions
        and all(isinstance(b, bool) for b in v)), f"null or a list of {positions} booleans")
    for name in ("warnings", "lens_warnings"):
        _field(document, "", name, lambda v: isinstance(v, list) and all(map(_is_text, v)),
               "a list of texts")
    vocab = document["vocab"]
    shown = list(document["input_ids"]) + [
        i for row in document["topk_ids"] if row for cell in row for i in cell]
    missing = next((i for i in shown if str(i) not in vocab), None)
    if missing is not None:
        raise InvalidDocument(f"vocab: token id {missing} is used but has no text")


def _check_tracked(document: dict[str, Any], rows: int, positions: int) -> None:
    if "tracked_ids" not in document:
        return
    ids, probs = document["tracked_ids"], document.get("tracked_probs")
    if not isinstance(ids, list) or len(ids) != positions or not all(
            isinstance(i, list) and all(_is_count(t) for t in i) for i in ids):
        raise _fail("tracked_ids", f"a list of {positions} lists of token ids")
    if not isinstance(probs, list) or len(probs) != positions:
        raise _fail("tracked_probs", f"a list of {positions} positions")
    for t, (tracked, block) in enumerate(zip(ids, probs)):
        if not isinstance(block, list) or len(block) != rows:
            raise _fail(f"tracked_probs[{t}]", f"a list of {rows} rows")
        for r, row in enumerate(block):
            if row is not None and (not isinstance(row, list) or len(row) != len(tracked)
                                    or not (_numbers(row) or all(v is None or _is_number(v)
                                                                 for v in row))):
                raise _fail(f"tracked_probs[{t}][{r}]", f"null or {len(tracked)} numbers")


def _check_groups(document: dict[str, Any], rows: int, positions: int) -> None:
    groups = document.get("target_groups")
    if groups is None:
        return
    if not isinstance(groups, list):
        raise _fail("target_groups", "a list")
    names = set()
    for index, group in enumerate(groups):
        where = f"target_groups[{index}]"
        if not isinstance(group, dict) or not isinstance(group.get("name"), str) \
                or group["name"] in names:
            raise _fail(where, "an object with a name no other group has")
        names.add(group["name"])
        _field(group, f"{where}.", "ids", lambda v: isinstance(v, list)
               and all(_is_count(i) for i in v), "a list of token ids", required=True)
        for name, leaf, expected in (("prob", _is_number, "a number"),
                                     ("rank", _is_count, "a rank"),
                                     ("top_ids", _is_count, "token ids"),
                                     ("top_probs", _is_number, "numbers")):
            depth = 1 if name.startswith("top_") else 0
            _grid({f"{where}.{name}": group.get(name)}, f"{where}.{name}", rows, positions,
                  leaf, expected, depth)


COMPONENT = re.compile(r"([A-Za-z0-9_]+)\.([1-9][0-9]*)")


def _component_blocks(components: Any) -> int | None:
    """The number of blocks of a decomposition's ``components`` ("embed", then blocks 1, 2,
    … in order, each 1–3 parts named "<name>.<block>", distinct within a block, then
    "bias"), or None where they are not that."""
    if not isinstance(components, list) or len(components) < 3 or \
            components[0] != "embed" or components[-1] != "bias":
        return None
    parts: list[list[str]] = []
    for component in components[1:-1]:
        match = COMPONENT.fullmatch(component) if isinstance(component, str) else None
        if match is None:
            return None
        name, block = match.group(1), int(match.group(2))
        if block == len(parts) + 1:
            parts.append([])
        if block != len(parts) or name in parts[-1] or len(parts[-1]) == 3:  # MOST_PARTS
            return None
        parts[-1].append(name)
    return len(parts) or None


def _check_decomposition(document: dict[str, Any], positions: int) -> None:
    """``decomposition``: null, or per component, position and attributed token a number
    (heads: per block and head the same, and a bias per block or null)."""
    field = document.get("decomposition")
    if field is None:
        return
    if not isinstance(field, dict):
        raise _fail("decomposition", "null or an object")
    tokens, components = field.get("token_ids"), field.get("components")
    if not isinstance(tokens, list) or len(tokens) != positions or not all(
            isinstance(ids, list) and ids and all(_is_count(i) for i in ids) for ids in tokens):
        raise _fail("decomposition.token_ids", f"a list of {positions} lists of token ids")
    blocks = _component_blocks(components)
    if blocks is None:
        raise _fail("decomposition.components",
                    "embed, then each block's parts in order (<name>.<block>: attn.1, mlp.1, "
                    "…, or mixer.1, …), then bias")
    widths = [len(ids) for ids in tokens]

    def grid(value: Any, where: str) -> None:
        if not isinstance(value, list) or len(value) != positions or not all(
                isinstance(cell, list) and len(cell) == width
                for cell, width in zip(value, widths)) or not (
                _numbers(list(chain.from_iterable(value)), nulls=False)
                or all(map(_is_number, chain.from_iterable(value)))):
            raise _fail(where, "per position a number per attributed token")

    attrs = field.get("attrs")
    if not isinstance(attrs, list) or len(attrs) != len(components):
        raise _fail("decomposition.attrs", f"a list of {len(components)} components")
    for index, value in enumerate(attrs):
        grid(value, f"decomposition.attrs[{index}]")
    heads = field.get("heads")
    if heads is None:
        return
    per_block, bias = (heads.get("attrs"), heads.get("bias")) if isinstance(heads, dict) \
        else (None, None)
    if not isinstance(per_block, list) or len(per_block) != blocks or not all(
            isinstance(b, list) and b for b in per_block):
        raise _fail("decomposition.heads.attrs", f"a list of {blocks} blocks of heads")
    for b, block in enumerate(per_block):
        for h, value in enumerate(block):
            grid(value, f"decomposition.heads.attrs[{b}][{h}]")
    if bias is not None:
        if not isinstance(bias, list) or len(bias) != blocks:
            raise _fail("decomposition.heads.bias", f"null or a list of {blocks} blocks")
        for b, value in enumerate(bias):
            grid(value, f"decomposition.heads.bias[{b}]")
