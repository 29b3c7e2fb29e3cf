"""What a writer does while its store refuses writes (a full disk, an I/O error): retry with
backoff, reopen the store, warn once, and at the end keep what is still unwritten in a spill file.

Records that could not be written wait, in order, in the writer's memory; they are retried with
a growing delay (not at every hand-over, which made each retry cost more than the last), each
time after the target reopened its store, since RocksDB keeps a handle in error after ENOSPC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pyoxigraph import Quad

from cnnprov.rdf.sparql import insert_operation, replace_operation
from cnnprov.storage.write_items import Converted, Replace, Update

log = logging.getLogger(__name__)

#: The first retry after a failed write, and the longest wait between two.
FIRST_RETRY_S = 0.5
LONGEST_RETRY_S = 10.0


class WriteFailures:
    """The state of a writer whose writes fail: when to retry, and what was said about it."""

    def __init__(self) -> None:
        self.failing = False
        self.reported = False  # the caller was told (one StoreWriteError a streak, not one an epoch)
        self._delay = FIRST_RETRY_S
        self._retry_at = 0.0

    def due(self, now: float | None = None) -> bool:
        """Whether waiting records should be tried again now."""
        return not self.failing or (now if now is not None else time.monotonic()) >= self._retry_at

    def retry_now(self) -> None:
        """The next try is not to wait (the writer closes: a last try)."""
        self._retry_at = 0.0

    def failed(self, error: BaseException, waiting: int, where: str) -> None:
        if not self.failing:
            log.warning(
                "cnnprov could not write to the provenance store %s (%s): training goes on; %d records "
                "wait in memory and are tried again, with the store reopened, until it takes them",
                where, _reason(error), waiting,
            )
        self.failing = True
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, LONGEST_RETRY_S)

    def succeeded(self, written: int, where: str) -> None:
        if self.failing:
            log.warning("cnnprov wrote the %d records that waited: the provenance store %s takes writes again",
                        written, where)
        self.failing = self.reported = False
        self._delay = FIRST_RETRY_S


def recover(target: Any) -> None:
    """Ask the target to reopen its store before a retry (a target that cannot is left as it is)."""
    reopen = getattr(target, "recover", None)
    if callable(reopen):
        try:
            reopen()
        except Exception as error:  # still refused: the retry fails and is scheduled again
            log.debug("cnnprov could not reopen the provenance store: %s", error)


def as_updates(items: Iterable[Any], convert: Callable[[Any], Any]) -> list[str]:
    """Waiting records as SPARQL Update requests, in order (what a spill file holds)."""
    texts: list[str] = []
    quads: list[Quad] = []
    for item in items:
        if not isinstance(item, (Quad, Replace, Update, Converted)):
            item = convert(item)
        if isinstance(item, Quad):
            quads.append(item)
        elif isinstance(item, Converted):
            quads.extend(item.quads)
        else:
            if quads:
                texts.append(insert_operation(quads))
                quads = []
            if isinstance(item, Replace):
                texts.append(replace_operation(item.subject, item.predicate, item.graph, item.objects))
            else:
                texts.append(item.sparql)
    if quads:
        texts.append(insert_operation(quads))
    return texts


def spill(target: Any, texts: list[str]) -> Path | None:
    """Keep ``texts`` in the target's spill file; its path, or ``None`` if it has none or cannot."""
    keep = getattr(target, "spill", None)
    if not callable(keep):
        return None
    try:
        path = keep(texts)
    except OSError as error:
        log.error("cnnprov could not keep the records it could not write in a spill file either: %s", error)
        return None
    return path if isinstance(path, Path) else None


def _reason(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:300] + "…"
