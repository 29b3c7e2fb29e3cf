"""When quads reach the store: buffered on the training thread, written by a background thread.

The training thread only appends to a Python list. ``flush()`` hands the list
to a writer thread, which turns items into quads and writes each batch in one
transaction (``Store.extend``; ``Store.bulk_extend`` for very large batches,
whose fixed cost of writing new files only pays off there).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pyoxigraph import NamedNode, Quad, Store

log = logging.getLogger(__name__)

#: Batches at least this large go through ``bulk_extend``.
BULK_THRESHOLD = 200_000
#: A buffer this long is handed to the writer thread without waiting for an epoch end.
DEFAULT_MAX_BUFFERED = 20_000


@dataclass(frozen=True)
class Replace:
    """Replace every value of ``predicate`` on ``subject`` in ``graph`` (e.g. a run's status)."""

    subject: NamedNode
    predicate: NamedNode
    graph: NamedNode
    objects: tuple = ()


class QuadWriter:
    """A bounded buffer of quads (or items that convert to quads) and the thread that stores them.

    Args:
        store: an open read-write pyoxigraph store; the writer only writes to it.
        convert: turns a buffered item that is neither a ``Quad`` nor a
            :class:`Replace` into quads. Runs on the writer thread, so the
            training thread can buffer cheap tuples instead of building quads.
        max_buffered: when the buffer holds this many items it is handed to the
            writer thread at once, so memory stays bounded on long epochs.
    """

    def __init__(
        self,
        store: Store,
        convert: Callable[[Any], Iterable[Quad]] | None = None,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        self._store = store
        self._convert = convert or _no_conversion
        self._max_buffered = max_buffered
        self._buffer: list = []
        self._batches: queue.Queue = queue.Queue(maxsize=4)  # back-pressure on a slow disk
        self._failed: list = []
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="cnnprov-writer", daemon=True)
        self._thread.start()
        # Flush on interpreter exit too; a weak reference keeps atexit from pinning the writer.
        self._atexit = _weak_close(self)
        atexit.register(self._atexit)

    # -- training thread -------------------------------------------------
    def append(self, item: Any) -> None:
        """Buffer one item. Constant time; hands the buffer over when it is full."""
        buffer = self._buffer
        buffer.append(item)
        if len(buffer) >= self._max_buffered:
            self.flush(wait=False)

    def extend(self, items: Iterable[Any]) -> None:
        self._buffer.extend(items)
        if len(self._buffer) >= self._max_buffered:
            self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        """Hand what is buffered to the writer thread; with ``wait``, return once it is stored."""
        if self._closed:
            return
        batch, self._buffer = self._buffer, []
        if batch:
            self._batches.put(batch)
        if wait:
            self._batches.join()
            self._raise_pending_error()

    def close(self) -> None:
        """Store everything buffered, stop the thread and release the store. Safe to call twice."""
        if self._closed:
            return
        try:
            self.flush(wait=True)
        finally:
            self._closed = True
            self._batches.put(None)
            self._thread.join()
            atexit.unregister(self._atexit)
            self._store = None

    @property
    def pending(self) -> int:
        """Items buffered or in flight that are not stored yet."""
        return len(self._buffer) + self._batches.qsize() + len(self._failed)

    # -- writer thread ---------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._batches.get()
            try:
                if batch is None:
                    return
                self._write(self._failed + batch)
                self._failed = []
            except BaseException as error:  # keep the batch; the next flush retries it
                log.error("cnnprov could not write to the provenance store: %s", error)
                self._failed = self._failed + batch
                self._error = error
            finally:
                self._batches.task_done()

    def _write(self, items: list) -> None:
        quads: list[Quad] = []
        for item in items:
            if isinstance(item, Quad):
                quads.append(item)
            elif isinstance(item, Replace):
                self._store_quads(quads)
                quads = []
                self._replace(item)
            else:
                quads.extend(self._convert(item))
        self._store_quads(quads)

    def _store_quads(self, quads: list[Quad]) -> None:
        if not quads:
            return
        if len(quads) >= BULK_THRESHOLD:
            self._store.bulk_extend(quads)
        else:
            self._store.extend(quads)

    def _replace(self, item: Replace) -> None:
        for old in list(self._store.quads_for_pattern(item.subject, item.predicate, None, item.graph)):
            self._store.remove(old)
        self._store.extend(Quad(item.subject, item.predicate, o, item.graph) for o in item.objects)

    def _raise_pending_error(self) -> None:
        if self._error is not None and not self._failed:
            self._error = None
        if self._error is not None:
            error, self._error = self._error, None
            raise OSError(
                f"cnnprov could not write {len(self._failed)} buffered records to the provenance "
                f"store ({error}); they are kept in memory and retried at the next flush"
            ) from error


def _no_conversion(item: Any) -> Iterable[Quad]:
    raise TypeError(f"QuadWriter cannot store a {type(item).__name__}; give it a convert function")


def _weak_close(writer: QuadWriter) -> Callable[[], None]:
    ref = weakref.ref(writer)

    def close_at_exit() -> None:
        live = ref()
        if live is not None:
            live.close()

    return close_at_exit
