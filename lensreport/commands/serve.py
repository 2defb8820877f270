"""`lensreport serve`: build into a temporary folder, serve it, rebuild on change.

Open pages poll /__lensreport__/status and reload when a rebuild finishes (no extra
server dependency, as pdoc does). A failed rebuild keeps serving the last good site.
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import jinja2

from ..errors import LensReportError, first_line
from ..manifest import load_manifest
from ..site.pages import builtin_templates
from .build import run_build

log = logging.getLogger("lensreport")


def _watched_files(manifest_path: Path, theme_dir: Path | None) -> dict[Path, int]:
    files = [manifest_path]
    builtin = builtin_templates()  # watched when it is a real folder (a checkout, an editable install)
    for folder in (builtin if isinstance(builtin, Path) else None, theme_dir):
        if folder is not None and folder.is_dir():
            files.extend(p for p in folder.rglob("*") if p.is_file())
    stamps = {}
    for path in files:
        try:
            stamps[path] = path.stat().st_mtime_ns
        except OSError:
            continue
    return stamps


class _Handler(http.server.SimpleHTTPRequestHandler):
    build_id = "0"
    error: str | None = None  # the last rebuild's failure, shown as a banner on open pages

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        route = self.path.split("?")[0]
        if route == "/__lensreport__/status":
            body = json.dumps({"build_id": self.build_id, "error": self.error}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http: " + format, *args)


def _describe(exc: Exception) -> str:
    """One line per problem: ours as written, anything else with its type (and where, for a
    template syntax error)."""
    if isinstance(exc, LensReportError):
        return str(exc)
    text = first_line(exc)
    where = ""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = f" ({exc.filename or exc.name}:{exc.lineno})"
    return f"{type(exc).__name__}{where}: {text}"


def serve(manifest_path: Path, host: str, port: int, watch: bool = True,
          stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    workspace = Path(tempfile.mkdtemp(prefix="lensreport-serve-"))
    site_dir = workspace / "site"
    manifest = load_manifest(manifest_path)
    run_build(manifest, site_dir, live_reload=True)
    handler = type("Handler", (_Handler,), {"build_id": str(time.time_ns())})
    server = http.server.ThreadingHTTPServer(
        (host, port), functools.partial(handler, directory=str(site_dir)))
    address = f"http://{host}:{server.server_address[1]}/"
    log.info("serving %s at %s (Ctrl-C to stop)", manifest_path, address)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        stamps = _watched_files(manifest_path, manifest.site.theme_dir)
        while not stop.wait(0.5):
            if not watch:
                continue
            current = _watched_files(manifest_path, manifest.site.theme_dir)
            if current == stamps:
                continue
            stamps = current
            log.info("change detected; rebuilding")
            try:
                manifest = load_manifest(manifest_path)
                run_build(manifest, site_dir, live_reload=True)
                handler.error = None
                handler.build_id = str(time.time_ns())
                log.info("rebuilt; open pages reload")
            except Exception as exc:  # noqa: BLE001 - any failure (a theme's Jinja error too)
                message = _describe(exc)
                for line in message.splitlines():
                    log.error("%s", line)
                log.error("still serving the last good build")
                handler.error = message
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(workspace, ignore_errors=True)
