"""The site's search index: written at build time as a small script (assets/search-index.js)
that every page loads, so search works from file:// (where browsers fetch nothing) as over
HTTP. assets/search.js reads it and draws the results.

An entry is a page to go to — a model, a prompt, a corpus, the site's note — with the words
it is found by: its name, and the words of its text (a prompt's text and target, a model's
reference, a corpus's source) and of its note. Words are NFC-normalised, lower-cased runs
of letters, digits and underscores (the same rule as search.js), each listed once.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Iterable

from ..text import one_line
from .figures import script_json

_WORD = re.compile(r"[^\W]+")
SNIPPET_CHARS = 120


def words(*texts: str | None) -> str:
    """The distinct words of ``texts``, in order of first appearance, space-separated."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in _WORD.findall(unicodedata.normalize("NFC", text or "").lower()):
            seen.setdefault(word, None)
    return " ".join(seen)


def _snippet(text: str | None) -> str:
    """A one-line preview: whitespace runs are one space, the rest is shown under the one
    rule for text (text.py), so a bidi override cannot reorder the result list."""
    text = one_line(text or "")
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 1] + "…"


def _entry(kind: str, title: str, url: str, snippet: str | None,
           *texts: str | None) -> dict[str, str]:
    return {"k": kind, "t": title, "u": url, "s": _snippet(snippet), "w": words(title, *texts)}


def search_index(site: Any, models: Iterable[Any], prompts: Iterable[Any],
                 corpora: Iterable[Any]) -> list[dict[str, str]]:
    """Entries (kind, title, url relative to the site, snippet, words) in page order."""
    entries = []
    if site.note:
        entries.append(_entry("note", site.title, "index.html", site.note, site.description,
                              site.note))
    entries += [_entry("prompt", p.name, f"prompts/{p.slug}/index.html", p.text, p.text,
                       p.target, p.note) for p in prompts]
    entries += [_entry("model", m.name, f"models/{m.slug}/index.html", m.note or m.reference,
                       m.reference, m.note) for m in models]
    entries += [_entry("corpus", c.name, f"corpora/{c.slug}/index.html", c.note,
                       c.source.path.name if c.source.path else c.source.dataset, c.note)
                for c in corpora]  # a file's name, never its path (the site moves)
    return entries


def search_script(entries: list[dict[str, str]]) -> str:
    """assets/search-index.js: the entries as a global that search.js reads."""
    return f"window.lensreportSearchIndex = {script_json(entries)};\n"
