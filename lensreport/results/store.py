"""The results store: content-keyed JSON documents in a folder or at an fsspec URL.

``cache_dir`` may be a local folder (the default, ``.lensreport-cache`` next to the
manifest) or any fsspec URL — ``file://``, ``s3://`` (lensreport[s3]), ``gs://``
(lensreport[gcs]), ``hf://`` (lensreport[hf]), … — so shards on many machines share one
store. Entries live at ``<root>/<key[:2]>/<key>.json``; static figures rendered for the site
(site/export.py) beside them, at ``<root>/figures/<key[:2]>/<key>.<format>``.

Every write is atomic per entry: on file systems a temporary file next to the entry is
renamed over it; object stores make a single PUT visible whole. Many writers may put the same
key at once (two shards computing the same run): each writes a complete, identical document
and the last rename or PUT wins, so exactly one valid entry remains. A killed writer leaves at
most a temporary ``.tmp`` file, which is never read as an entry. A reader never changes the
store: an entry that does not parse or does not match its key is reported (a warning, so
``--strict`` fails) and treated as missing; the writer that recomputes it replaces it,
atomically.

Claims: processes that share a store (a build and shards started together) compute each run
once. A process claims a run before computing it — the lock ``<key>.lock`` beside the entry,
taken without waiting (results/concurrency.py) — and removes the lock once the entry is
written; a run another process holds is waited for and read from the store, and computed
only if its holder stopped without writing it. Only a folder (or a ``file://`` URL) can
lock: at another fsspec URL every claim succeeds, so two processes may compute one run
twice (atomic writes keep the store valid).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from ..errors import LensReportError, first_line
from .concurrency import Claim, try_claim, wait_for
from .documents import dumps, loads
from .files import atomic_write
from .identity import READABLE_SCHEMAS
from .validation import check_corpus_document, check_prompt_document

log = logging.getLogger("lensreport")

# Extras that bring each protocol's fsspec implementation.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "hf": "hf"}


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


class ResultsStore:
    """get/put of results documents by content key, in a folder or at an fsspec URL."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.fs: Any = None
        if is_url(location):
            import fsspec

            protocol = self.location.split("://", 1)[0]
            try:
                self.fs, self.root = fsspec.core.url_to_fs(self.location)
            except (ImportError, ValueError) as exc:
                extra = EXTRAS.get(protocol)
                hint = (f"pip install 'lensreport[{extra}]'" if extra
                        else "install the fsspec implementation for it")
                raise LensReportError(f"results store {self.location}: the '{protocol}' "
                                      f"protocol is not available ({hint}): "
                                      f"{first_line(exc, 120)}") from None
            self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple)
                                    else (self.fs.protocol,))
        else:
            self.root = str(location)
            self.local = True

    def __repr__(self) -> str:
        return f"ResultsStore({self.location!r})"

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key[:2]}/{key}.json"

    def _read(self, path: str) -> bytes | None:
        if self.fs is None:
            try:
                return Path(path).read_bytes()
            except FileNotFoundError:
                return None
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            data = self._read(path)
        except OSError as exc:
            raise LensReportError(f"results store {self.location}: cannot read {path} "
                                  f"({exc})") from None
        if data is None:
            return None
        try:
            document = loads(data.decode("utf-8"))
            if not isinstance(document, dict) or document.get("cache_key") != key or \
                    document.get("schema_version") not in READABLE_SCHEMAS:
                raise ValueError("mismatched entry")
            # A shared store is input too (validation.py).
            (check_prompt_document if "prompt" in document else check_corpus_document)(document)
            return document
        except ValueError as exc:
            log.warning("results cache entry %s is unreadable (%s); it is recomputed and "
                        "replaced", path, first_line(exc, 80))
            return None

    @property
    def can_lock(self) -> bool:
        """Whether claims work here: a folder or a file:// URL (object stores cannot lock)."""
        return self.fs is None or self.local

    def _lock_path(self, key: str) -> Path:
        return Path(self._path(key)[:-len(".json")] + ".lock")

    def claim(self, key: str) -> Claim | None:
        """Claim ``key``'s run before computing it, without waiting: a Claim to release
        once the entry is written, or None while another process computes it. Always a
        Claim where the store cannot lock."""
        if not self.can_lock:
            return Claim()
        try:
            return try_claim(self._lock_path(key))
        except OSError as exc:
            raise LensReportError(f"results store {self.location}: cannot claim {key} "
                                  f"({exc})") from None

    def wait(self, key: str) -> None:
        """Wait while another process holds ``key``'s claim."""
        if self.can_lock:
            wait_for(self._lock_path(key))

    def put(self, key: str, document: dict[str, Any]) -> None:
        self._write(self._path(key), dumps(document).encode("utf-8"))

    def get_blob(self, name: str) -> bytes | None:
        """A file kept beside the documents (e.g. ``figures/ab/<key>.png``), or None."""
        path = f"{self.root.rstrip('/')}/{name}"
        try:
            return self._read(path)
        except OSError as exc:
            raise LensReportError(f"results store {self.location}: cannot read {path} "
                                  f"({exc})") from None

    def put_blob(self, name: str, data: bytes) -> None:
        """Keep a file beside the documents, written as atomically as a document."""
        self._write(f"{self.root.rstrip('/')}/{name}", data)

    def _write(self, path: str, data: bytes) -> None:
        try:
            if self.fs is None:
                atomic_write(Path(path), data)
            elif self.local:
                # A unique temporary name per writer, then a rename over the entry.
                temporary = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                self.fs.pipe_file(temporary, data)
                try:
                    self.fs.mv(temporary, path)
                except BaseException:
                    self._remove(temporary)
                    raise
            else:
                self.fs.pipe_file(path, data)  # an object store's PUT appears whole
        except OSError as exc:
            raise LensReportError(f"results store {self.location}: cannot write {path} "
                                  f"({exc})") from None

    def _remove(self, path: str) -> None:
        try:
            if self.fs is None:
                Path(path).unlink(missing_ok=True)
            else:
                self.fs.rm_file(path)
        except (OSError, FileNotFoundError):
            pass
