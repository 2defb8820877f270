"""The one rule for text that leaves lensreport: on a page, in a figure, in a file, on the
terminal.

:func:`visible` shows every character that is invisible, reorders its neighbours or cannot
be encoded as a visible stand-in: newline ↵, tab ⇥, carriage return ␍, and any other
control, format (bidi overrides and isolates, zero-width characters, …), line or paragraph
separator, space other than U+0020, private-use, unassigned or surrogate code point as
``⟨U+XXXX⟩`` — exactly the characters Python's ``str.isprintable`` calls non-printable. All
other Unicode stays as it is. The result is one line that cannot change how the text
around it is ordered, encodes as UTF-8, and is well-formed in XML (SVG) and HTML.

It applies to tokens (models/tokens.py, special tokens included), to names, titles and
token-group names (the manifest keeps them in this form: manifest/parse.py), to every label
of a static figure (site/static_figures.py), to CSV text cells (site/tables.py), to one-line
previews of longer texts (page descriptions, search snippets) and to every error and log
line (cli.py). A prompt's text and Markdown notes are data and stay exactly as written on
pages (HTML-escaped, in a block of their own, so a bidi override cannot reach past them);
the JSON documents stay lossless. The function is idempotent.
"""

from __future__ import annotations

GLYPHS = {"\n": "↵", "\t": "⇥", "\r": "␍"}


def _stand_in(char: str) -> str:
    if char.isprintable():
        return char
    return GLYPHS.get(char) or f"⟨U+{ord(char):04X}⟩"


def visible(text: str) -> str:
    """``text`` with every non-printable character shown as a visible stand-in (above)."""
    if text.isprintable():
        return text
    return "".join(_stand_in(char) for char in text)


def one_line(text: str) -> str:
    """A preview of a longer text: whitespace runs are one space, the rest :func:`visible`."""
    return visible(" ".join(text.split()))


def surrogates(text: str) -> str | None:
    """None for text that encodes (as UTF-8), else a hint naming its surrogate code points:
    a pair as the character it stands for (YAML and Python do not join "\\ud83e\\udd8a"
    the way JSON does)."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    found = [char for char in text if "\ud800" <= char <= "\udfff"]
    hint = "write the character itself, or \\UXXXXXXXX for one beyond U+FFFF"
    for high, low in zip(found, found[1:]):
        if "\ud800" <= high <= "\udbff" and "\udc00" <= low <= "\udfff":
            point = 0x10000 + ((ord(high) - 0xD800) << 10) + (ord(low) - 0xDC00)
            hint = (f"the pair U+{ord(high):04X} U+{ord(low):04X} stands for U+{point:04X}: "
                    f"write \\U{point:08X} or the character itself")
            break
    named = [f"U+{ord(char):04X}" for char in dict.fromkeys(found)]
    what = ("a surrogate code point (half of a UTF-16 pair), not a character" if len(named) == 1
            else "surrogate code points (halves of UTF-16 pairs), not characters")
    return f"this text holds {', '.join(named)}: {what}; {hint}"
