"""Readable, unambiguous token strings for byte-level BPE and SentencePiece tokenizers.

A display string shows what the token *is*: a leading space stays a real space (" dog"),
whitespace-only tokens become ␣, an empty token ∅, bytes that are not valid UTF-8 on their
own ``\\xNN``, and everything else follows the one rule for text (lensreport/text.py): newline
↵, tab ⇥, carriage return ␍, other invisible, bidi or control characters ⟨U+XXXX⟩ — special
tokens too, which are shown as the tokenizer spells them otherwise. Decoding a single
SentencePiece token with the tokenizer drops its leading space, so "▁true" and "true" would
collide; we map "▁" ourselves instead. Whatever collisions remain
(e.g. a special token "<bos>" and a normal token spelling "<bos>") get a ``⟨#id⟩`` suffix, so
two different ids never look the same.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ..text import visible

_SENTENCEPIECE_SPACE = "▁"
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable stand-in character -> byte."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def tokenizer_kind(tokenizer: Any) -> str:
    """'byte_level', 'sentencepiece' or 'other', read off how " the" is spelled."""
    ids = tokenizer.encode(" the the", add_special_tokens=False)
    pieces = [p for p in tokenizer.convert_ids_to_tokens(ids) if p]
    joined = "".join(pieces)
    if "Ġ" in joined:
        return "byte_level"
    if _SENTENCEPIECE_SPACE in joined:
        return "sentencepiece"
    return "other"


def _make_visible(text: str) -> str:
    if text == "":
        return "∅"
    if text.strip(" ") == "":
        return "␣" * len(text)
    return visible(text)


def _from_byte_level(piece: str) -> str | None:
    decoder = _byte_decoder()
    if not all(char in decoder for char in piece):
        return None  # an added token written in plain text, e.g. <|im_start|>
    data = bytes(decoder[char] for char in piece)
    return data.decode("utf-8", errors="backslashreplace")


def _from_sentencepiece(piece: str) -> str:
    if _BYTE_PIECE.match(piece):
        # Byte fallback: whitespace and control bytes become visible glyphs below; printable
        # ASCII keeps its <0xNN> spelling (the plain token for that letter exists too).
        value = int(piece[3:5], 16)
        if value < 0x20 or value == 0x7F:
            return chr(value)
        return piece if value < 0x80 else f"\\x{value:02x}"
    return piece.replace(_SENTENCEPIECE_SPACE, " ")


def special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids


def plain_vocab(tokenizer: Any) -> list[str | None]:
    """The decoded text of every token id (what the token spells, no visible stand-ins);
    None where a token is not text on its own (a byte of a multi-byte character)."""
    kind = tokenizer_kind(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    texts: list[str | None] = []
    for token_id, piece in enumerate(pieces):
        if piece is None:
            texts.append(None)
        elif kind == "sentencepiece" and _BYTE_PIECE.match(piece):
            value = int(piece[3:5], 16)
            texts.append(chr(value) if value < 0x80 else None)
        elif kind == "sentencepiece":
            texts.append(piece.replace(_SENTENCEPIECE_SPACE, " "))
        elif kind == "byte_level":
            decoder = _byte_decoder()
            if not all(char in decoder for char in piece):
                texts.append(piece)  # an added token written in plain text
                continue
            try:
                texts.append(bytes(decoder[char] for char in piece).decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(None)
        else:
            texts.append(tokenizer.decode([token_id]))
    return texts


def display_vocab(tokenizer: Any, vocab_size: int) -> list[str]:
    """Display string for every id < vocab_size (the unembedding's rows), all distinct."""
    kind = tokenizer_kind(tokenizer)
    known = min(vocab_size, len(tokenizer))
    pieces = tokenizer.convert_ids_to_tokens(list(range(known)))
    specials = special_ids(tokenizer)
    shown: list[str] = []
    for token_id, piece in enumerate(pieces):
        if piece is None:
            shown.append(f"⟨id {token_id}⟩")
            continue
        if kind == "sentencepiece" and _BYTE_PIECE.match(piece):
            shown.append(_make_visible(_from_sentencepiece(piece)))
            continue
        if token_id in specials:
            shown.append(_make_visible(piece))  # as spelled, under the same rule
            continue
        if kind == "byte_level":
            text = _from_byte_level(piece)
            text = piece if text is None else text
        elif kind == "sentencepiece":
            text = _from_sentencepiece(piece)
        else:
            text = tokenizer.decode([token_id])
        shown.append(_make_visible(text))
    shown.extend(f"⟨unused id {i}⟩" for i in range(known, vocab_size))
    return _disambiguate(shown, specials)


def _disambiguate(shown: list[str], specials: set[int]) -> list[str]:
    """Give every id but the first of a look-alike group a ⟨#id⟩ suffix (specials keep theirs)."""
    owner: dict[str, int] = {}
    for token_id in sorted(range(len(shown)), key=lambda i: (i not in specials, i)):
        owner.setdefault(shown[token_id], token_id)
    result = list(shown)
    for token_id, text in enumerate(shown):
        if owner[text] != token_id:
            result[token_id] = f"{text}⟨#{token_id}⟩"
    return result
