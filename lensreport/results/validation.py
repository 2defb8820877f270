"""Checks of a results document read from outside (a `results:` file, the results store).

A saved document is untrusted input: its fields reach file names (the lens kind), pages
(names, tokens, numbers), keys and the browser's reader. Before anything uses one, every field
that is there must have the type and the shape the writer gives it (documents.py); the first
that does not is reported by its place (``entropy[3][2]``), so the error names the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import partial
from itertools import chain
from operator import is_not
from typing import Any, Callable

import numpy as np

from .metrics import CORPUS_METRICS

# A lens kind's name: it becomes a file-name suffix (``<prompt>.<kind>.json``), so letters,
# digits and '_' only (the registry holds its kinds to this too: lens/kinds/__init__.py).
LENS_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")

Check = Callable[[Any], bool]


class InvalidDocument(ValueError):
    """A field of a document that is not what the writer writes (the message says where)."""


# JSON integers have no bound; a float conversion of one past a float's range overflows.
INT_BOUND = 2 ** 53


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= INT_BOUND


_INTEGRAL_TYPES = frozenset({int, type(None)})
_NUMBER_TYPES = frozenset({int, float, type(None)})


@dataclass(frozen=True)
class Numbers:
    """A leaf check: finite numbers within [low, high] (integers only where ``integral``).

    The bounds are what the writer can write and pack (documents.py's codecs): a
    probability above 1 or a logit past fixed5's range is refused here, by its place, not
    when the site packs it. ``every`` is the bulk form, for the lists of numbers that are
    most of a document (10⁵ values with a decomposition): types compared and values tested
    at C speed; where it says False the values are checked one by one, which names the bad
    one."""

    low: float
    high: float
    integral: bool = False

    @property
    def expected(self) -> str:
        """What an error says was expected."""
        return f"a number from {self.low:.0f} to {self.high:.0f}"

    def __call__(self, value: Any) -> bool:
        if self.integral:
            return _is_int(value) and self.low <= value <= self.high
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value) and \
            self.low <= value <= self.high

    def every(self, items: list[Any], nulls: bool = True) -> bool:
        """Every item passes (or is None where ``nulls``)."""
        kinds = set(map(type, items))
        if not kinds <= (_INTEGRAL_TYPES if self.integral else _NUMBER_TYPES) or (
                not nulls and type(None) in kinds):
            return False
        try:
            values = np.array(items, dtype=np.float64)  # None -> NaN
        except OverflowError:  # an integer past a float's range
            return False
        present = values[~np.isnan(values)]
        return len(present) == len(items) - items.count(None) and bool(np.all(
            np.isfinite(present) & (present >= self.low) & (present <= self.high)))


# Each field's range, as its codec packs it (documents.py: GRID_CODECS and the others).
# A probability may pass 1 by float32 rounding (a group's sum of many tokens): not by more
# than its 4 significant digits show.
COUNT = Numbers(0, 2 ** 32 - 2, integral=True)  # ids, ranks: the int codec (NULL_CODE)
PROBABILITY = Numbers(0.0, 1.0005)
FIXED4 = Numbers(-(2 ** 31 - 1) / 10 ** 4, (2 ** 31 - 1) / 10 ** 4)  # nats, heads' logits
FIXED5 = Numbers(-(2 ** 31 - 1) / 10 ** 5, (2 ** 31 - 1) / 10 ** 5)  # components' logits
ANY_NUMBER = Numbers(-math.inf, math.inf)


def _token_ids(value: Any) -> bool:
    """A list of token ids (ints from 0 below the int codec's null code)."""
    return isinstance(value, list) and COUNT.every(value, nulls=False)


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _fail(where: str, expected: str) -> InvalidDocument:
    return InvalidDocument(f"{where}: expected {expected}")


def _grid(document: dict[str, Any], name: str, rows: int, columns: int, leaf: Numbers,
          expected: str, depth: int = 0) -> int | None:
    """A [row][position] field (``depth`` 1: [row][position][j], every cell as long as the
    first: returns that width); a row may be null where the lens does not cover it, a value
    null where it has none."""
    value = document.get(name)
    if not isinstance(value, list) or len(value) != rows:
        raise _fail(name, f"a list of {rows} rows")
    width = None
    for r, row in enumerate(value):
        if row is None:
            continue
        if not isinstance(row, list) or len(row) != columns:
            raise _fail(f"{name}[{r}]", f"null or a list of {columns} positions")
        if depth:
            for t, cell in enumerate(row):
                if not isinstance(cell, list) or (width is not None and len(cell) != width):
                    count = "" if width is None else f"{width} "
                    raise _fail(f"{name}[{r}][{t}]", f"a list of {count}{expected}")
                width = len(cell)
            if leaf.every(list(chain.from_iterable(row))):
                continue
        elif leaf.every(row):
            continue
        for t, cell in enumerate(row):
            for j, item in enumerate(cell if depth else [cell]):
                if item is not None and not leaf(item):
                    place = f"{name}[{r}][{t}]" + (f"[{j}]" if depth else "")
                    raise _fail(place, expected)
    return width


_NO_TEXT = frozenset({int, float, bool, type(None)})  # a value of these types holds no text
_NESTED = frozenset({list, type(None)})


def _joined(lists: list[Any]) -> list[Any]:
    """The items of a list's lists, its nulls skipped (a null row, a missing cell)."""
    return list(chain.from_iterable(filter(partial(is_not, None), lists)))


def _finite(items: list[Any]) -> bool:
    """Every number of a list of numbers and nulls is finite (at C speed: most of a
    document is many short lists); False also where an integer is past a float's range,
    which the caller then looks at item by item."""
    try:
        return all(map(math.isfinite, filter(partial(is_not, None), items)))
    except OverflowError:
        return False


def _json_values(value: Any, where: str) -> None:
    """Every text encodes as UTF-8 and every number is finite, in every field (a lone
    surrogate from a JSON escape, or a NaN JSON reads, would fail the site's writes:
    refuse it here, by its place)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidDocument(f"{where}: text with a lone surrogate (not valid "
                                  "Unicode)") from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidDocument(f"{where}: not a finite number (NaN or an infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _json_values(key, f"{where} (a key)")
            _json_values(item, f"{where}.{key}")
    elif isinstance(value, list):
        flat, kinds = value, set(map(type, value))
        while kinds <= _NESTED and list in kinds:  # a grid of numbers: looked at as one list
            flat = _joined(flat)
            kinds = set(map(type, flat))
        if kinds <= _NO_TEXT and (float not in kinds or _finite(flat)):
            return  # numbers, at C speed (else item by item, to name the place)
        for index, item in enumerate(value):
            _json_values(item, f"{where}[{index}]")


def _field(document: dict[str, Any], where: str, name: str, check: Check, expected: str,
           required: bool = False) -> None:
    if name not in document:
        if required:
            raise InvalidDocument(f"{where}{name}: missing")
        return
    if not check(document[name]):
        raise _fail(f"{where}{name}", expected)


def _check_frame(document: Any, objects: tuple[str, ...]) -> None:
    """What every document is: a JSON object of valid text and finite numbers, with these
    fields objects."""
    if not isinstance(document, dict):
        raise InvalidDocument("the document: expected a JSON object")
    _json_values(document, "document")
    for name in objects:
        _field(document, "", name, lambda v: isinstance(v, dict), "an object", required=True)


def _check_layers(document: dict[str, Any]) -> int:
    """``layers`` is the list of rows 0, 1, …: returns how many."""
    _field(document, "", "layers", lambda v: isinstance(v, list) and len(v) > 0
           and v == list(range(len(v))), "the list of rows 0, 1, …", required=True)
    return len(document["layers"])


def check_prompt_document(document: Any) -> None:
    """Raise InvalidDocument at the first field of a prompt document that is not as written.

    Schemas 1, 2 and 3 alike: packed arrays (schema 3; schema 2's ``tracked_probs``) are
    unpacked by documents.decoded first, which refuses one that does not unpack by its field.
    """
    _check_frame(document, ("model", "prompt", "lens"))
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
    _field(document, "", "input_ids", lambda v: _token_ids(v) and len(v) > 0,
           "a non-empty list of token ids", required=True)
    positions = len(document["input_ids"])
    rows = _check_layers(document)
    _field(document, "", "vocab", lambda v: isinstance(v, dict) and all(
        k.isdigit() and isinstance(s, str) for k, s in v.items()),
        "an object of token id -> text", required=True)
    _field(document, "", "input_tokens", lambda v: isinstance(v, list) and len(v) == positions
           and all(isinstance(s, str) for s in v), f"a list of {positions} texts")
    for name in ("entropy", "kl_to_final"):
        _grid(document, name, rows, positions, FIXED4, FIXED4.expected)
    k = _grid(document, "topk_ids", rows, positions, COUNT, "token ids", 1)
    if _grid(document, "topk_probs", rows, positions, PROBABILITY,
             "probabilities from 0 to 1", 1) != k:
        raise _fail("topk_probs", f"as many probabilities per cell as topk_ids has ids ({k})")
    for name, leaf, expected in (("next_token_prob", PROBABILITY, "a probability from 0 to 1"),
                                 ("next_token_rank", COUNT, "a rank"),
                                 ("target_prob", PROBABILITY, "a probability from 0 to 1"),
                                 ("target_rank", COUNT, "a rank")):
        if document.get(name) is not None:
            _grid(document, name, rows, positions, leaf, expected)
    _check_tracked(document, rows, positions)
    _check_groups(document, rows, positions)
    _field(document, "", "row_depths", lambda v: isinstance(v, list) and len(v) == rows
           and all(ANY_NUMBER(d) for d in v) and v == sorted(v) and v[0] == 0,
           f"a list of {rows} ascending depths from 0")
    _check_decomposition(document, positions)
    _field(document, "", "generated_from", _optional(lambda v: COUNT(v) and v < positions),
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
    if not isinstance(ids, list) or len(ids) != positions or not all(map(_token_ids, ids)):
        raise _fail("tracked_ids", f"a list of {positions} lists of token ids")
    if not isinstance(probs, list) or len(probs) != positions:
        raise _fail("tracked_probs", f"a list of {positions} positions")
    for t, (tracked, block) in enumerate(zip(ids, probs)):
        if not isinstance(block, list) or len(block) != rows:
            raise _fail(f"tracked_probs[{t}]", f"a list of {rows} rows")
        if all(row is None or (type(row) is list and len(row) == len(tracked))
               for row in block) and PROBABILITY.every(_joined(block)):
            continue  # the position's rows at once; else row by row, to name the place
        for r, row in enumerate(block):
            if row is not None and (not isinstance(row, list) or len(row) != len(tracked)
                                    or not (PROBABILITY.every(row) or all(
                                        v is None or PROBABILITY(v) for v in row))):
                raise _fail(f"tracked_probs[{t}][{r}]",
                            f"null or {len(tracked)} probabilities from 0 to 1")


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
        _field(group, f"{where}.", "ids", _token_ids, "a list of token ids", required=True)
        for name, leaf, expected in (("prob", PROBABILITY, "a probability from 0 to 1"),
                                     ("rank", COUNT, "a rank"),
                                     ("top_ids", COUNT, "token ids"),
                                     ("top_probs", PROBABILITY, "probabilities from 0 to 1")):
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
            _token_ids(ids) and ids for ids in tokens):
        raise _fail("decomposition.token_ids", f"a list of {positions} lists of token ids")
    blocks = _component_blocks(components)
    if blocks is None:
        raise _fail("decomposition.components",
                    "embed, then each block's parts in order (<name>.<block>: attn.1, mlp.1, "
                    "…, or mixer.1, …), then bias")
    widths = [len(ids) for ids in tokens]

    def grid(value: Any, where: str, numbers: Numbers) -> None:
        if not isinstance(value, list) or len(value) != positions or not all(
                isinstance(cell, list) and len(cell) == width
                for cell, width in zip(value, widths)) or not (
                numbers.every(list(chain.from_iterable(value)), nulls=False)
                or all(map(numbers, chain.from_iterable(value)))):
            raise _fail(where, f"per position {numbers.expected} per attributed token")

    attrs = field.get("attrs")
    if not isinstance(attrs, list) or len(attrs) != len(components):
        raise _fail("decomposition.attrs", f"a list of {len(components)} components")
    for index, value in enumerate(attrs):
        grid(value, f"decomposition.attrs[{index}]", FIXED5)
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
            grid(value, f"decomposition.heads.attrs[{b}][{h}]", FIXED4)
    if bias is not None:
        if not isinstance(bias, list) or len(bias) != blocks:
            raise _fail("decomposition.heads.bias", f"null or a list of {blocks} blocks")
        for b, value in enumerate(bias):
            grid(value, f"decomposition.heads.bias[{b}]", FIXED4)


def check_corpus_document(document: Any) -> None:
    """Raise InvalidDocument at the first field of a corpus document (a results-store entry
    of curves) that is not as written: per metric a curve of a number or null per row, its
    interval null or a [low, high] pair per row; token groups likewise."""
    _check_frame(document, ("corpus", "model", "lens"))
    rows = _check_layers(document)
    for name in ("scored_tokens", "scored_bytes"):
        _field(document, "", name, COUNT, "a count", required=True)

    def curve(holder: dict[str, Any], where: str, name: str) -> None:
        _field(holder, where, name, lambda v: isinstance(v, list) and len(v) == rows
               and FIXED4.every(v), f"a list of {rows} numbers or nulls", required=True)
        _field(holder, where, f"{name}_ci", _optional(
            lambda v: isinstance(v, list) and len(v) == rows and all(
                pair is None or (isinstance(pair, list) and len(pair) == 2
                                 and FIXED4.every(pair, nulls=False)) for pair in v)),
            f"null or a list of {rows} [low, high] pairs or nulls")

    for metric in CORPUS_METRICS:
        curve(document, "", metric.name)
    groups = document.get("target_groups", [])
    if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("name"), str) for g in groups):
        raise _fail("target_groups", "a list of named groups")
    for index, group in enumerate(groups):
        _field(group, f"target_groups[{index}].", "ids", _token_ids, "a list of token ids",
               required=True)
        curve(group, f"target_groups[{index}].", "prob")
