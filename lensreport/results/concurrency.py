"""Cache writes that N processes may make at once, on one machine or a shared filesystem.

Two tools, used together by every cache write (converted weights, assembled GGUF files,
results, lenses and their checkpoints):

* **Unique staging.** A file or folder is written under a name no other process uses
  (``.<name>.<kind>-<host>-<pid>-<random>``) beside its target and renamed over it, so a
  reader never sees half of it and two writers never write into one another's files.
* **A lock per target** (``<target>.lock``, `filelock`: ``flock`` where the filesystem has
  it, an exclusive lock file where it does not), so the work is done once: the second
  process waits, then finds the target complete and uses it. The lock files stay (they are
  empty); a lock dies with its process, so a killed writer never blocks the next one, and
  what a killed writer staged is removed by the next one that holds the lock (at once on
  the same host, where its process is seen to be gone; after a day from another host).

A results store claims runs with the same locks (taken without waiting; see
results/store.py): there the lock file is removed once the entry is written.

Where a filesystem cannot lock at all, the lock is skipped with a debug line: the work may
then be done twice, and unique staging still leaves one complete target.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger("lensreport")

LOCK_SUFFIX = ".lock"
STALE_SECONDS = 24 * 3600  # staged files of another host are a writer's leftovers after this


def lock_path(target: Path) -> Path:
    return target.with_name(target.name + LOCK_SUFFIX)


def _file_lock(path: Path) -> Any:
    import filelock

    path.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(path))


@dataclass(frozen=True)
class Held:
    """What cache_lock got: ``locked`` (False where the filesystem cannot lock) and
    ``waited`` (another process held the lock first: what it wrote may be complete now)."""

    locked: bool
    waited: bool = False


@contextmanager
def cache_lock(target: Path, what: str | None) -> Iterator[Held]:
    """Hold ``target``'s lock (waiting for another process that holds it) while writing
    ``target``; ``what`` names it in the line logged while waiting (None: a short wait, not
    worth a line)."""
    import filelock

    lock, waited = _file_lock(lock_path(target)), False
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if what:
                log.info("waiting for another process writing %s", what)
            waited = True
            lock.acquire()
    except OSError as exc:
        log.debug("cannot lock %s (%s); writing it unlocked", lock_path(target), exc)
        yield Held(False)
        return
    try:
        yield Held(True, waited)
    finally:
        lock.release()


def being_written(target: Path) -> bool:
    """Whether another process holds ``target``'s lock now (writing it)."""
    import filelock

    if not lock_path(target).exists():
        return False
    lock = filelock.FileLock(str(lock_path(target)))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


def staging_path(target: Path, kind: str) -> Path:
    """A name beside ``target`` that no other process (here or on another host) uses."""
    return target.with_name(f".{target.name}.{kind}-{socket.gethostname()}-{os.getpid()}-"
                            f"{uuid.uuid4().hex[:12]}")


def remove_leftovers(target: Path, kind: str) -> None:
    """Remove what writers of ``target`` that died left staged: on this host, those whose
    process is gone; from another host, those a day old (a filesystem mounted without
    working locks must never lose a living writer's files). Call it holding ``target``'s
    lock."""
    host = socket.gethostname()
    for leftover in target.parent.glob(f".{target.name}.{kind}-*"):
        owner = leftover.name[len(f".{target.name}.{kind}-"):].rpartition("-")[0]
        owner, _, pid = owner.rpartition("-")
        try:
            if owner == host:
                if pid.isdigit() and _alive(int(pid)):
                    continue
            elif time.time() - leftover.lstat().st_mtime < STALE_SECONDS:
                continue
        except OSError:
            continue
        log.debug("removing %s, left by a writer that stopped", leftover)
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def replace_file(target: Path, write: Callable[[Path], Any], kind: str = "tmp") -> None:
    """``write(path)`` to a unique temporary file beside ``target``, then rename it over
    ``target`` (atomic): readers see the old file or the new one, whole; two writers never
    share a temporary file; a failed write leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = staging_path(target, kind)
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class Claim:
    """A run claimed in a local results store: the lock of its entry, held until the entry
    is written (or the claimant gives up)."""

    def __init__(self, lock: Any = None, path: Path | None = None) -> None:
        self._lock, self._path = lock, path

    def release(self) -> None:
        """Let the run go (its entry written, or given up), removing the lock file: whoever
        locks the name later, or wakes on the removed file, looks in the store and finds
        the entry, or claims the run anew."""
        if self._lock is None:
            return
        lock, self._lock = self._lock, None
        try:
            if self._path is not None and _current(lock, self._path) is True:
                self._path.unlink(missing_ok=True)
        finally:
            lock.release()


def _current(lock: Any, path: Path) -> bool | None:
    """Whether the file whose ``flock`` we hold is still the one at ``path``: a holder
    removes the file once done (Claim.release), so a process that waited on it holds the
    lock of a file no longer there, which claims nothing. None for a lock that is a file's
    existence (no ``flock`` on this filesystem): it is the lock's own to remove."""
    import filelock

    context = getattr(lock, "_context", None)
    descriptor = getattr(context, "lock_file_fd", None)
    if isinstance(lock, filelock.SoftFileLock) or getattr(context, "soft_fallback", False) \
            or not isinstance(descriptor, int):
        return None
    try:
        return os.path.samestat(os.stat(path), os.fstat(descriptor))
    except OSError:
        return False


def try_claim(path: Path) -> Claim | None:
    """The lock at ``path`` without waiting: a Claim, or None while another process holds
    it. A filesystem that cannot lock gives an empty Claim (the run may then be computed
    twice; the store's atomic writes keep it valid)."""
    import filelock

    while True:
        lock = _file_lock(path)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        except OSError as exc:
            log.debug("cannot lock %s (%s); computing without a claim", path, exc)
            return Claim()
        if _current(lock, path) is not False:
            return Claim(lock, path)
        lock.release()  # its holder finished and removed it between our open and lock


def wait_for(path: Path) -> None:
    """Wait until no process holds the lock at ``path``; the caller then reads the entry
    (or, where its holder stopped without writing it, claims the run)."""
    if not path.exists():
        return  # written and released (or never claimed)
    lock = _file_lock(path)
    try:
        lock.acquire()
    except OSError:
        return
    Claim(lock, path).release()  # held by this process now: released, none left behind
