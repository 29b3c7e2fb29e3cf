"""The spool: write requests a SPARQL endpoint did not take, kept in order in a local file.

A spool file is a sequence of SPARQL Update requests, each after a comment line
``# cnnprov spool entry …`` and ending in `` ;``, so the whole file is itself one valid
request (``curl --data-binary @FILE -H 'Content-Type: application/sparql-update' URL/update``
sends it too). Appending and sending hold an advisory lock (POSIX), so the training process
and ``cnnprov push`` never send the same entry twice; sent entries leave the file at once,
so a push cut short can simply be run again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

try:  # a spool file is shared by the training process and `cnnprov push`
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

#: Environment variable naming the directory of spool files.
SPOOL_ENV = "CNNPROV_SPOOL"
#: Spool directory unless ``$CNNPROV_SPOOL`` names another.
DEFAULT_SPOOL_DIR = "cnnprov-spool"
_SPOOL_HEADER = "# cnnprov spool entry"


def default_spool_path(run_id: str) -> Path:
    """Where a run's unsent batches go: ``$CNNPROV_SPOOL/<run id>.ru``, else ``./cnnprov-spool/``."""
    return Path(os.environ.get(SPOOL_ENV) or DEFAULT_SPOOL_DIR) / f"{run_id}.ru"


class Spool:
    """An append-only file of SPARQL Update requests, sent later in order.

    Each entry is a comment line ``# cnnprov spool entry …`` and one request ending in `` ;``,
    so the whole file is one valid SPARQL Update request as well. Appending and sending hold
    an advisory lock (POSIX), so the training process and ``cnnprov push`` never send the
    same entry twice.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"

    def append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()})
        with _open_locked(self.path, "a") as handle:
            handle.write(f"{_SPOOL_HEADER} {header}\n{text.rstrip()} ;\n")
            handle.flush()
            os.fsync(handle.fileno())

    def append_all(self, texts: list[str]) -> None:
        """Append every request in one write, or none: a failed write is cut off again."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()})
        data = memoryview("".join(f"{_SPOOL_HEADER} {header}\n{text.rstrip()} ;\n" for text in texts).encode())
        with _open_locked(self.path, "a") as handle:
            descriptor = handle.fileno()  # written past Python's buffer, so that a failure leaves nothing in it
            start = os.lseek(descriptor, 0, os.SEEK_END)
            try:
                while data:
                    data = data[os.write(descriptor, data) :]
                os.fsync(descriptor)
            except OSError:
                os.ftruncate(descriptor, start)
                raise

    def count(self) -> int:
        return len(self.entries())

    def entries(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return _split_entries(text)

    def drain(self, send: Callable[[str], None]) -> int:
        """Send every entry in order; sent ones leave the file (removed when empty). Returns the count sent.

        On an error the entries not sent stay, and the error propagates.
        """
        try:
            handle = _open_locked(self.path, "r+")
        except FileNotFoundError:
            return 0
        with handle:
            entries = _split_entries(handle.read())
            sent = 0
            try:
                for entry in entries:
                    send(entry)
                    sent += 1
            finally:
                if sent == len(entries):
                    self.path.unlink(missing_ok=True)
                elif sent:
                    handle.seek(0)
                    handle.write("".join(entries[sent:]))
                    handle.truncate()
                    handle.flush()
                    os.fsync(handle.fileno())
            return sent


def _open_locked(path: Path, mode: str) -> IO[str]:
    """Open ``path`` holding an exclusive advisory lock (released on close).

    A drain may have removed the file while this process waited for the lock: then the file
    is opened again (``"a"`` creates it anew; ``"r+"`` raises ``FileNotFoundError``).
    """
    while True:
        handle = open(path, mode, encoding="utf-8")  # noqa: SIM115 - returned open, holding the lock
        if fcntl is None:
            return handle
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            if "a" not in mode:
                handle.close()
                raise
        handle.close()


def _split_entries(text: str) -> list[str]:
    entries: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(_SPOOL_HEADER) or not entries:
            entries.append(line)
        else:
            entries[-1] += line
    return [entry for entry in entries if entry.strip()]


