"""Slugs: readable, file-system-safe names for pages and data files."""

from __future__ import annotations

import re
import unicodedata


def slugify(name: str) -> str:
    """A readable, file-system-safe slug: lowercase ASCII letters, digits, '-', '_' and '.'."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-.")
    text = re.sub(r"\.{2,}", ".", text)
    return text[:60].strip("-.") or "item"


def unique_slugs(names: list[str]) -> list[str]:
    """Slugs in manifest order; a collision gets -2, -3, ... so every page is distinct and stable."""
    taken: set[str] = set()
    slugs = []
    for name in names:
        base = slugify(name)
        slug, n = base, 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        taken.add(slug)
        slugs.append(slug)
    return slugs
