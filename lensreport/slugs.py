"""Slugs: readable, file-system-safe names for pages and data files.

A slug is lowercase ASCII letters, digits, '-' and '_' — never a dot, never '--': derived
file names add ``.<lens>``, ``.partN`` and ``.json`` after a slug and figure ids join two slugs
with ``--``, so no slug can spell another name's derived file (site/outputs.py checks the
whole set of paths anyway).
"""

from __future__ import annotations

import re
import unicodedata

# Model slugs share folders (data/, embed/, figures/) with the corpora's.
RESERVED_MODEL_SLUGS = frozenset({"corpora"})


def slugify(name: str) -> str:
    """A readable, file-system-safe slug: lowercase ASCII letters, digits, '-' and '_'."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")
    return text[:60].strip("-") or "item"


def unique_slugs(names: list[str], reserved: frozenset[str] = frozenset()) -> list[str]:
    """Slugs in manifest order; a collision (or a ``reserved`` slug) gets -2, -3, ... so every
    page is distinct and stable."""
    taken: set[str] = set(reserved)
    slugs = []
    for name in names:
        base = slugify(name)
        slug, n = base, 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        taken.add(slug)
        slugs.append(slug)
    return slugs
