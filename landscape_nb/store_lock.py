"""The store's writer lock: one process at a time writes a landscape store.

A run that has points to compute holds an advisory lock, ``<path>.lock`` beside the store
(``filelock``), with the owner's pid, host and start time in ``<path>.lock.owner.json``; a
second writer waits up to ``LANDSCAPE_NB_STORE_WAIT`` seconds (default 10; ``inf`` waits for
ever) and then refuses, naming that owner. See ``landscape_nb.store``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import LandscapeError

logger = logging.getLogger("landscape_nb.store")  # the store's messages keep one logger name

WAIT_ENV = "LANDSCAPE_NB_STORE_WAIT"
DEFAULT_WAIT_SECONDS = 10.0


def wait_seconds(wait: float | None = None) -> float:
    """How long a second writer waits for the store's lock: ``wait``, else ``$LANDSCAPE_NB_STORE_WAIT``, else 10 s."""
    if wait is None:
        raw = os.environ.get(WAIT_ENV)
        if raw is None or not raw.strip():
            return DEFAULT_WAIT_SECONDS
        try:
            wait = float(raw)
        except ValueError:
            raise LandscapeError(
                f"{WAIT_ENV}={raw!r}; expected a number of seconds (0 refuses at once, inf waits for ever)"
            ) from None
    if math.isnan(wait) or wait < 0:
        raise LandscapeError(f"store wait of {wait!r} s; expected a number ≥ 0 (inf waits for ever)")
    return float(wait)


class WriterLock:
    """The advisory lock that makes one process at a time the writer of the store at ``store_path``.

    ``<store>.lock`` is locked with ``filelock`` (``flock``: released by the OS when the
    holder dies, so a ``kill -9`` never leaves a stale lock); ``<store>.lock.owner.json``
    records who holds it, for the message a waiting writer gives.
    """

    def __init__(self, store_path: str | Path):
        self.store_path = Path(store_path)
        self.path = self.store_path.with_name(self.store_path.name + ".lock")
        self.owner_path = self.store_path.with_name(self.store_path.name + ".lock.owner.json")
        self._lock = None

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.is_locked

    def owner(self, patience: float = 0.0) -> str:
        """"process N on host H since T", or what is known about the holder. A holder writes its record just
        after it takes the lock: a waiter that saw the lock taken waits up to ``patience`` seconds for it
        (on a loaded machine three racing writers saw the lock before its record)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                o = json.loads(self.owner_path.read_text())
                return f"process {o['pid']} on host {o['host']} since {o['since']}"
            except (OSError, ValueError, KeyError, TypeError):
                if time.monotonic() >= deadline:
                    return f"another process (its owner record {str(self.owner_path)!r} is not written yet or unreadable)"
                time.sleep(0.02)

    def live_owner(self) -> str | None:
        """The holder's description when its owner record names a live writer (or one on another host), else None.

        Reads the record only (no locking, nothing written), so it works on read-only locations."""
        try:
            o = json.loads(self.owner_path.read_text())
            pid, host = int(o["pid"]), str(o["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None  # a writer killed with -9 left its record; its flock died with it
            except OSError:
                pass
        return self.owner()

    def acquire(self, wait: float | None = None) -> "WriterLock":
        from filelock import FileLock, Timeout

        seconds = wait_seconds(wait)
        lock = FileLock(str(self.path), thread_local=False)
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:  # held: say so before waiting (it resumes from what the other run writes)
                if seconds <= 0:
                    raise
                logger.warning("the store %r is being written by %s; waiting %s for that run to finish (%s=<seconds> "
                               "sets how long): this run then resumes from its tiles, or stops if it still writes",
                               str(self.store_path), self.owner(patience=1.0),
                               "as long as it takes" if math.isinf(seconds) else f"up to {seconds:g} s", WAIT_ENV)
                lock.acquire(timeout=-1 if math.isinf(seconds) else seconds)
        except Timeout:
            raise LandscapeError(
                f"the store {str(self.store_path)!r} is being written by {self.owner(patience=1.0)}; waited {seconds:g} s. "
                "Wait for that run to finish and rerun (it resumes from the store), use another store path, "
                f"or wait longer with {WAIT_ENV}=<seconds> (inf waits for ever)"
            ) from None
        except OSError as exc:
            raise LandscapeError(
                f"cannot lock the store {str(self.store_path)!r} for writing: opening {str(self.path)!r} failed "
                f"({_os_detail(exc)}); the location must be writable to compute missing points. "
                "load_surface(path) still reads it; copy it to a writable place to resume it"
            ) from exc
        self._lock = lock
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        try:
            tmp = self.owner_path.with_name(f".{self.owner_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.owner_path)
        except OSError as exc:  # the lock holds without the record; only a waiter's message is poorer
            logger.debug("could not record the owner of %s: %s", self.path, exc)
        return self

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            self.owner_path.unlink(missing_ok=True)  # before releasing: never delete the next owner's record
        except OSError:
            pass
        finally:
            lock, self._lock = self._lock, None
            lock.release()


def _os_detail(exc: BaseException) -> str:
    """``[Errno 28] No space left on device (the file)`` for an OSError, else the exception's type and text."""
    if isinstance(exc, OSError) and exc.strerror:
        code = f"[Errno {exc.errno}] " if exc.errno else ""
        return f"{code}{exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"
