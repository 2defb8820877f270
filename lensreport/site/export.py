"""Static figures at build time (``site.export``): Plotly's own export through kaleido, in the
system's Chromium or Chrome (never a downloaded browser).

One renderer: the figure descriptions of static_figures.py go through plotly.js in a headless
browser: the plotly package's full bundle (kaleido loads it), the version of the partial
bundle the site ships (scripts/vendor_plotly.sh keeps them equal). Renders are cached in the results store
(``figures/<key[:2]>/<key>.<fmt>``), keyed by the figure description itself (it is made from
the document and the names shown), the format, the scale and ``RENDERER_VERSION``, so a
template-only rebuild renders nothing and a store shared by CI or shards shares figures too.

Determinism: plotly.js names its SVG clip paths and gradients with ``Math.random``; the export
page seeds it (a fixed mulberry32 sequence, reset for every figure since kaleido reloads its
tab), so an SVG is the same bytes every time. PNG is deterministic for a given Chromium and
fonts. A PDF carries creation and modification dates: they are rewritten, in place (same
length, so the cross-reference table stays valid), to ``SOURCE_DATE_EPOCH`` or 1970-01-01.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..errors import LensReportError, first_line
from .outputs import SiteFiles

log = logging.getLogger("lensreport")

SCALE = 2  # PNG pixels per CSS pixel (print quality); vector formats ignore it
RENDERER_VERSION = 1  # bump when static_figures.py changes what a figure looks like
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                 "chrome")
TABS = 2  # browser tabs rendering at once (measured: benchmarks/RESULTS.md)
RENDER_TIMEOUT_S = 120
# plotly.js calls Math.random for element ids; a seeded generator makes SVG ids repeatable.
_SEEDED_RANDOM = """(function () {
  var s = 0x2545f491;
  Math.random = function () {
    s = (s + 0x6d2b79f5) | 0;
    var t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
})();
"""
_PDF_DATE = re.compile(rb"/(CreationDate|ModDate) \((D:\d{14}[^)]*)\)")


def find_browser() -> str:
    """The Chromium or Chrome to render with: $BROWSER_PATH, else the first on PATH."""
    override = os.environ.get("BROWSER_PATH")
    if override:
        if not os.access(override, os.X_OK):
            raise LensReportError(f"site.export: BROWSER_PATH={override!r} is not an "
                                  "executable browser; point it at Chromium or Chrome, or "
                                  "set site.export: [] to build without static figures")
        return override
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise LensReportError("site.export needs Chromium or Chrome for the static figures and "
                          f"none was found on PATH ({', '.join(BROWSER_NAMES)}) or in "
                          "$BROWSER_PATH: install one (Debian/Ubuntu: apt-get install "
                          "chromium), or set site.export: [] to build without static figures")


def figure_digest(figure: dict[str, Any]) -> str:
    """The content of a figure description (computed once per figure, for all its formats)."""
    blob = json.dumps(figure, sort_keys=True, ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class ExportJob:
    """One file to write: ``path`` (relative to the site) holds ``figure`` as ``fmt``;
    ``digest`` is ``figure_digest(figure)``."""

    path: str
    figure: dict[str, Any]
    fmt: str
    digest: str

    @property
    def blob_name(self) -> str:
        """Where the store keeps this render: keyed by what makes its bytes."""
        import plotly

        material = f"{self.digest}|{self.fmt}|{SCALE}|{RENDERER_VERSION}|{plotly.__version__}"
        key = hashlib.sha256(material.encode()).hexdigest()
        return f"figures/{key[:2]}/{key}.{self.fmt}"


def write_exports(jobs: Sequence[ExportJob], files: SiteFiles, store: Any | None) -> None:
    """Write every job's file through ``files`` (the site's planned outputs): from the
    store where rendered before, the rest rendered in one browser session (and stored)."""
    if not jobs:
        return
    started = time.perf_counter()
    names = [job.blob_name for job in jobs]
    found = [store.get_blob(name) if store is not None else None for name in names]
    missing = [index for index, data in enumerate(found) if data is None]
    if missing:
        rendered = render([jobs[i] for i in missing])
        for index, data in zip(missing, rendered):
            found[index] = data
            if store is not None:
                store.put_blob(names[index], data)
    for job, data in zip(jobs, found):
        files.write(job.path, _stamp(data, job.fmt))
    seconds = time.perf_counter() - started
    log.info("static figures: %d file(s), %d rendered, %d from the cache (%.1f s)",
             len(jobs), len(missing), len(jobs) - len(missing), seconds)


def render(jobs: Sequence[ExportJob]) -> list[bytes]:
    """Render figures in one headless browser, ``TABS`` at a time."""
    browser = find_browser()
    try:
        # A thread of its own: asyncio.run refuses a thread whose event loop is running
        # (Jupyter, Playwright's sync API), and kaleido is asyncio only.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, _render(jobs, browser)).result()
    except LensReportError:
        raise
    except Exception as exc:  # noqa: BLE001 - kaleido and the browser fail in many ways
        raise LensReportError(f"static export with {browser} failed: {type(exc).__name__}: "
                              f"{first_line(exc)}; set site.export: [] to build without "
                              "static figures") from None


async def _render(jobs: Sequence[ExportJob], browser: str) -> list[bytes]:
    import kaleido

    with tempfile.TemporaryDirectory(prefix="lensreport-export-") as folder:
        seed = Path(folder) / "seeded-random.js"
        seed.write_text(_SEEDED_RANDOM, encoding="utf-8")
        page = kaleido.PageGenerator(mathjax=False, others=[seed.as_uri()])
        async with kaleido.Kaleido(n=min(TABS, len(jobs)), page_generator=page, path=browser,
                                   timeout=RENDER_TIMEOUT_S) as renderer:
            return list(await asyncio.gather(*(
                renderer.calc_fig(job.figure, opts={"format": job.fmt, "scale": SCALE})
                for job in jobs)))


def _stamp(data: bytes, fmt: str) -> bytes:
    """A PDF's dates set to SOURCE_DATE_EPOCH (or 1970-01-01), in place; others as they are."""
    if fmt != "pdf":
        return data
    try:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or 0)
    except ValueError:
        raise LensReportError(f"SOURCE_DATE_EPOCH={os.environ['SOURCE_DATE_EPOCH']!r} is not "
                              "a number of seconds since 1970") from None
    stamp = datetime.fromtimestamp(epoch, timezone.utc).strftime("D:%Y%m%d%H%M%S+00'00'")

    def replace(match: re.Match[bytes]) -> bytes:
        new = stamp.encode("ascii")
        if len(new) != len(match.group(2)):  # another date form: keep it (offsets must stay)
            return match.group(0)
        return b"/" + match.group(1) + b" (" + new + b")"

    return _PDF_DATE.sub(replace, data)
