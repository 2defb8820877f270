"""The link check over a written site (before it is published), as MkDocs validates links:
every ``href`` and ``src`` in every page must name a file of the site.

Relative links resolve against their page; root-relative ones (``/assets/…``, the 404 page
without ``site_url``) against the site; absolute ones under ``site_url`` against the site
too. Other absolute URLs, ``mailto:`` and ``data:`` are outside the site and not checked, and
neither are fragments (``#fig-…``). A link to a folder needs its index.html; a link out of the site's
folder (``../../x``) is broken wherever it lands.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("href", "src") and value]


def _target(site: Path, page: Path, link: str, site_url: str | None) -> Path | None:
    """The file ``link`` on ``page`` names, or None when it points outside the site."""
    if site_url and link.startswith(site_url.rstrip("/") + "/"):
        link = "/" + link[len(site_url.rstrip("/")) + 1:]
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    path = unquote(parts.path)
    target = site / path.lstrip("/") if path.startswith("/") else page.parent / path
    return target / "index.html" if path.endswith("/") else target


def broken_links(site: Path, site_url: str | None) -> list[tuple[str, str]]:
    """(page, link) for every link to a missing file, pages in path order."""
    site = site.resolve()
    broken = []
    for page in sorted(site.rglob("*.html")):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for link in parser.links:
            target = _target(site, page, link, site_url)
            if target is None:
                continue
            resolved = target.resolve()
            if not resolved.is_file() or not resolved.is_relative_to(site):
                broken.append((page.relative_to(site).as_posix(), link))
    return broken
