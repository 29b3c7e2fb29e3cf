"""Who holds an embedded store: one advertisement file inside it, and one liveness check.

RocksDB lets one process open a store for writing. The process that holds it (a training
run, a sweep's session, ``cnnprov serve``) writes ``cnnprov-writer.json`` into the store
directory: its process id and host, the run it records, since when, and the URL of the
read endpoint it serves, if any. Readers in other processes find that endpoint there; a
second writer is told who holds the store. A process killed while it held the store leaves
the file behind: :func:`is_process_alive` tells such a stale advertisement from a live one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ADVERTISEMENT_FILE = "cnnprov-writer.json"


@dataclass(frozen=True)
class Holder:
    """What a store's advertisement says about the process that holds it."""

    pid: int | None
    host: str | None
    run_id: str = ""
    since: str = ""
    url: str = ""  # the read endpoint it serves, if any
    token: str = ""  # the endpoint's access token, if it requires one

    @property
    def alive(self) -> bool | None:
        """``True`` while the process runs, ``False`` once it ended, ``None`` on another host."""
        return is_process_alive(self.host, self.pid)

    @property
    def is_this_process(self) -> bool:
        return (self.pid, self.host) == (os.getpid(), socket.gethostname())

    def describe(self) -> str:
        """``process 123 on host (run …), since …`` for messages."""
        return (
            f"process {self.pid} on {self.host}"
            + (f" (run {self.run_id})" if self.run_id else "")
            + (f", since {self.since}" if self.since else "")
        )


def advertise(directory: Path, run_id: str = "", url: str = "", token: str = "") -> None:
    """Name this process as the holder of the store in ``directory`` (mode 0600: it may carry a token)."""
    holder = Holder(os.getpid(), socket.gethostname(), run_id, time.strftime("%Y-%m-%dT%H:%M:%S%z"), url, token)
    path = directory / ADVERTISEMENT_FILE
    # one temporary file per thread: two runs of one process may advertise at once
    temporary = path.with_name(f".{ADVERTISEMENT_FILE}.{os.getpid()}.{threading.get_ident()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(asdict(holder), handle)
    os.replace(temporary, path)  # readers never see half a file


def read_holder(directory: Path) -> Holder | None:
    """The holder the store in ``directory`` advertises, or ``None`` when none does."""
    try:
        data = json.loads((directory / ADVERTISEMENT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    return Holder(
        pid if isinstance(pid, int) else None,
        str(data["host"]) if data.get("host") is not None else None,
        str(data.get("run_id") or ""),
        str(data.get("since") or ""),
        str(data.get("url") or ""),
        str(data.get("token") or ""),
    )


def withdraw(directory: Path) -> None:
    """Remove this process's advertisement (after letting go of the store)."""
    holder = read_holder(directory)
    if holder is not None and holder.is_this_process:
        try:
            (directory / ADVERTISEMENT_FILE).unlink(missing_ok=True)
        except OSError as error:  # a directory made read-only meanwhile: the run is recorded all the same
            log.warning(
                "cnnprov could not remove '%s' (%s); readers see that its process has ended and ignore it",
                directory / ADVERTISEMENT_FILE, error.strerror or error,
            )


def is_process_alive(host: str | None, pid: int | str | None) -> bool | None:
    """Whether process ``pid`` on ``host`` still runs.

    ``None`` when ``host`` is another machine (it cannot be checked from here).
    Use it with a run's recorded ``cnnprov:hostname`` and ``cnnprov:processId``
    to tell a run that is still training from one whose process was killed
    (both show the status "running"). A process id the system has since given
    to another process reads as alive: the answer errs on the side of "running".
    """
    if host is None or pid is None:
        return None
    if host != socket.gethostname():
        return None
    try:
        number = int(pid)
    except (TypeError, ValueError):
        return False
    if number <= 0:
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to another user
        return True
    except OSError:
        return False
    return not _is_zombie(number)


def _is_zombie(pid: int) -> bool:
    """An ended child whose parent has not collected it yet (Linux ``/proc``; elsewhere False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]
