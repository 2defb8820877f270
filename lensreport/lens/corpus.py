"""Corpora: texts -> token windows, streamed (shared by corpus curves and lens training).

The convention (README, "Corpus curves"): each document is tokenized on its own as the
tokenizer does by default (BOS where the model adds one) and cut into consecutive,
non-overlapping windows of at most ``context`` tokens; only the first window of a document
starts with its BOS. Each window runs through the model on its own; every position except
the last of a window is scored against the next token of the window. Scoring stops after
``max_tokens`` scored positions, in document order.

Bytes, for bits per byte: a scored token covers the text from the end of the token before
it to its own end (so the space before a word counts with the word), measured in UTF-8.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import LensReportError, first_line
from ..results.identity import file_digest


@dataclass(frozen=True)
class CorpusSource:
    """A .txt file (documents separated by blank lines), a .jsonl file (a text field), or a
    Hugging Face `datasets` id (with split and column, used when online)."""

    path: Path | None = None
    dataset: str | None = None
    split: str = "train"
    column: str = "text"

    def describe(self) -> str:
        return str(self.path) if self.path else f"dataset {self.dataset} ({self.split})"


def documents(source: CorpusSource) -> Iterator[str]:
    """The corpus's documents in order, streamed (a file is never read whole)."""
    if source.path is not None:
        yield from _file_documents(source.path, source.column)
        return
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise LensReportError(f"corpus {source.dataset}: Hugging Face datasets ids need the "
                              "`datasets` package (pip install datasets), or use a local "
                              ".txt or .jsonl file") from None
    try:
        stream = datasets.load_dataset(source.dataset, split=source.split, streaming=True)
        for row in stream:
            text = row.get(source.column)
            if isinstance(text, str) and text.strip():
                yield text
    except LensReportError:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, missing column: one line
        raise LensReportError(f"corpus {source.dataset}: cannot read it from the Hugging Face "
                              f"Hub: {first_line(exc, 200)} — check the id, split and "
                              "network, or use a local .txt or .jsonl file") from None


def _file_documents(path: Path, column: str) -> Iterator[str]:
    try:
        yield from _read_documents(path, column)
    except UnicodeDecodeError:
        raise LensReportError(_not_utf8(path)) from None


def _not_utf8(path: Path) -> str:
    """Where a corpus file stops being UTF-8 (read again: the text stream does not say)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return (f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                f"{exc.start}); save the corpus as UTF-8")
    return f"{path}: not UTF-8 text; save the corpus as UTF-8"


def _read_documents(path: Path, column: str) -> Iterator[str]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise LensReportError(f"corpus {path}: cannot read it ({exc.strerror})") from None
    with handle:
        if path.suffix == ".jsonl":
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise LensReportError(f"{path}:{number}: not a JSON line") from None
                text = row.get(column) if isinstance(row, dict) else None
                if not isinstance(text, str):
                    raise LensReportError(f"{path}:{number}: no text field '{column}'")
                if text.strip():
                    yield text
            return
        lines: list[str] = []
        for line in handle:
            if line.strip():
                lines.append(line)
            elif lines:
                yield "".join(lines).rstrip("\n")
                lines = []
        if lines:
            yield "".join(lines).rstrip("\n")


def digest(source: CorpusSource) -> str:
    """Content identity of a local corpus file (datasets: id, split and column)."""
    if source.path is None:
        return f"dataset:{source.dataset}|{source.split}|{source.column}"
    return f"{file_digest(source.path)}|{source.column}"


@dataclass
class Window:
    """One model input: token ids, and the UTF-8 bytes each scored target token covers."""

    document: int  # index of the document in the corpus
    input_ids: list[int]
    target_bytes: list[int]  # len(input_ids) - 1 entries; entry t is for input_ids[t + 1]


def windows(source: CorpusSource, tokenizer: Any, context: int, max_tokens: int
            ) -> Iterator[Window]:
    """Windows in corpus order until ``max_tokens`` positions are scored (the last window is
    cut so the total is exact)."""
    if context < 2:
        raise LensReportError("corpus context must be at least 2 tokens")
    scored = 0
    for index, text in enumerate(documents(source)):
        ids, ends = _encode(tokenizer, text)
        for start in range(0, len(ids), context):
            chunk = ids[start:start + context]
            if len(chunk) < 2:
                continue
            covered = [max(0, ends[start + t + 1] - ends[start + t])
                       for t in range(len(chunk) - 1)]
            left = max_tokens - scored
            if len(chunk) - 1 > left:
                chunk, covered = chunk[:left + 1], covered[:left]
            scored += len(chunk) - 1
            yield Window(index, chunk, covered)
            if scored >= max_tokens:
                return


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """Token ids and, per token, the UTF-8 byte offset where it ends in the text."""
    byte_end = [0]
    for char in text:
        byte_end.append(byte_end[-1] + len(char.encode("utf-8")))
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, return_offsets_mapping=True)
        ends, last = [], 0
        for start, end in encoded["offset_mapping"]:
            last = max(last, end) if end > start else last  # special tokens cover nothing
            ends.append(byte_end[last])
        return list(encoded["input_ids"]), ends
    ids = tokenizer(text)["input_ids"]
    # Slow tokenizers: decode prefixes (quadratic but rare) to find where each token ends.
    ends = [len(tokenizer.decode(ids[:n + 1], skip_special_tokens=True).encode("utf-8"))
            for n in range(len(ids))]
    return ids, ends
