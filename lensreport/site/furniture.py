"""Site furniture: absolute URLs (canonical, Open Graph), sitemap.xml, robots.txt, the social
card image, and each page's description.

Only these need absolute URLs, so they exist only when ``site.site_url`` is set; every link
between pages stays relative. The social card (assets/social-card.png) is the preview image
of pages without a figure PNG of their own: 1200 × 630 pixels, the site's first heatmap in
its entropy colours on the page's dark background, written by a small PNG writer (numpy and
zlib, no browser needed, byte-identical for the same results).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Iterable
from xml.sax.saxutils import escape as xml_escape

import numpy as np

from ..text import one_line

CARD_PATH = "assets/social-card.png"
CARD_SIZE = (1200, 630)
DESCRIPTION_CHARS = 200


def absolute_url(site_url: str, path: str) -> str:
    """``path`` (relative to the site) under ``site_url``; a folder's index.html as the
    folder (``prompts/fox/``), as static hosts serve it."""
    if path == "index.html" or path.endswith("/index.html"):
        path = path[:-len("index.html")]
    return site_url.rstrip("/") + "/" + path


def sitemap_xml(site_url: str, pages: Iterable[str]) -> str:
    """Every page's absolute URL (no dates: the same build gives the same file)."""
    urls = "".join(f"  <url><loc>{xml_escape(absolute_url(site_url, page))}</loc></url>\n"
                   for page in pages)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
            f"{urls}</urlset>\n")


def robots_txt(site_url: str) -> str:
    return f"User-agent: *\nAllow: /\nSitemap: {absolute_url(site_url, 'sitemap.xml')}\n"


def shorten(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    """One line of at most ``limit`` characters (a meta description): whitespace runs are
    one space, the rest is shown under the one rule for text (text.py)."""
    text = one_line(text)
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _png(pixels: np.ndarray) -> bytes:
    """An RGB uint8 array as a PNG file (filter 0 on every row, zlib level 9)."""
    height, width, _ = pixels.shape
    raw = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + chunk(b"IEND", b""))


def _hex(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def _viridis(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB, by Plotly's Viridis stops (the page's entropy colours)."""
    from plotly.colors import sequential

    stops = np.array([_hex(c) for c in sequential.Viridis], dtype=float)
    where = np.linspace(0, 1, len(stops))
    return np.stack([np.interp(values, where, stops[:, i]) for i in range(3)], axis=-1)


def card_png(entropy: list[Any] | None) -> bytes:
    """The social card: ``entropy`` ([layer][position], rows may be null) drawn as blocks,
    the last layer on top, on the dark page background with an accent bar; a plain card
    without a heatmap."""
    width, height = CARD_SIZE
    card = np.empty((height, width, 3), np.uint8)
    card[:] = _hex("#14161a")
    card[:, :24] = _hex("#2f6fde")
    rows = [row for row in (entropy or []) if row is not None]
    if rows:
        grid = np.array([[np.nan if v is None else v for v in row] for row in rows[::-1]],
                        dtype=float)
        highest = np.nanmax(grid) if np.isfinite(grid).any() else 1.0
        colours = _viridis(np.nan_to_num(grid / (highest or 1.0), nan=0.0))
        colours[np.isnan(grid)] = _hex("#1c1f25")
        area_w, area_h = width - 24 - 120, height - 120
        colours = colours[:area_h, :area_w]  # a long prompt: its first tokens
        cell_h = max(1, area_h // colours.shape[0])
        cell_w = max(1, min(area_w // colours.shape[1], 3 * cell_h))
        block = np.repeat(np.repeat(colours.astype(np.uint8), cell_h, axis=0), cell_w, axis=1)
        if min(cell_w, cell_h) >= 4:  # the page's gaps between cells
            block[cell_h - 1::cell_h] = _hex("#14161a")
            block[:, cell_w - 1::cell_w] = _hex("#14161a")
        top = (height - block.shape[0]) // 2
        left = 24 + (width - 24 - block.shape[1]) // 2
        card[top:top + block.shape[0], left:left + block.shape[1]] = block
    return _png(card)


def prompt_description(prompt: Any, model_names: list[str]) -> str:
    return shorten(f"The logit lens of {', '.join(model_names)} on the prompt “{prompt.text}”"
                   + (f" (target {prompt.target!r})" if prompt.target else "") + ".")


def model_description(model: Any, facts: dict[str, Any], prompt_count: int) -> str:
    return shorten(f"{model.name} ({facts.get('architecture')}, {facts.get('num_layers')} "
                   f"layers): what each layer would predict, on {prompt_count} prompt(s).")


def corpus_description(corpus: Any, model_names: list[str]) -> str:
    return shorten(f"Per-layer curves over the corpus {corpus.name} (cross-entropy, KL to the "
                   f"final layer, entropy, top-1 agreement) for {', '.join(model_names)}.")


def figure_description(figure: Any) -> str:
    return shorten(f"{figure.model.name} on the prompt “{figure.prompt.text}”: what each "
                   "layer would predict.")
