"""When quads reach the store: buffered on the training thread, written by a background thread.

The training thread only appends to a Python list. The list goes to a writer
thread when it is full, when a caller flushes, or — for items appended with a
time stamp, as metric values are — when an item arrives ``hand_over_s`` or more
after the oldest one buffered: so the writer stores a run's records while the
run trains, and an epoch end finds little left to wait for. The writer thread turns items into
quads and writes them in transactions of bounded size (the store works with the
GIL released; building quads in Python is the writer's only GIL-bound work). At most ``max_batches`` handed-over
lists wait for it; a training thread that gets further ahead waits
(back-pressure), so memory stays bounded however long a run is.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from pyoxigraph import Quad

from cnnprov.errors import StoreWriteError
from cnnprov.rdf.sparql import insert_operation
from cnnprov.storage.protocols import WriteTarget
from cnnprov.storage.write_failures import WriteFailures, as_updates, recover, spill
from cnnprov.storage.write_items import Converted, Replace, Update

log = logging.getLogger(__name__)

#: A buffer this long is handed to the writer thread at once, whatever else happens.
DEFAULT_MAX_BUFFERED = 4096
#: Handed-over buffers that may wait for the writer thread before ``append`` waits for it.
DEFAULT_MAX_BATCHES = 4
#: Time-stamped items go to the writer thread once the oldest of them has waited this long (seconds).
#: Shorter leaves less to wait for at an epoch end but wakes the writer thread more often, and each
#: wake takes the GIL (and, on a busy machine, the queue's lock) from the training thread for a
#: moment; on the digits CNN (~70 ms epochs) 50 ms cost the training thread least (BENCHMARKS.md).
DEFAULT_HAND_OVER_S = 0.05
#: Quads written in one transaction at most: a RocksDB transaction slows down as it grows.
TRANSACTION_QUADS = 16_384
#: Quads before an update written with it, as its ``INSERT DATA``, when they are this few at most.
FOLDED_QUADS = 64
#: An update that opens with a prologue: Oxigraph takes ``PREFIX``/``BASE`` only at a request's start.
_PROLOGUE = re.compile(r"\s*(PREFIX|BASE)\b", re.IGNORECASE)


class QuadWriter:
    """A bounded buffer of quads (or items that convert to quads) and the thread that stores them.

    Args:
        target: where the records go (a session's :class:`~cnnprov.storage.protocols.WriteTarget`).
            Or a function that opens one: it then runs on the writer thread, so opening
            (tens of ms for RocksDB) overlaps the caller's work; :meth:`wait_open` and the
            first waiting :meth:`flush` raise what it raised.
        convert: turns a buffered item that is neither a ``Quad`` nor a
            :class:`Replace` into quads, or into an :class:`Update`. Runs on the writer thread, so the
            training thread can buffer cheap tuples instead of building quads.
        max_buffered: when the buffer holds this many items it is handed to the
            writer thread at once.
        max_batches: handed-over buffers that may wait for the writer thread;
            past that, handing over waits until the writer catches up.
        hand_over_s: an item appended with an ``at`` this many seconds or more
            after the oldest buffered one sends the buffer to the writer thread.
        last_items: what to append as the writer closes (explicitly or at interpreter exit),
            e.g. an item that makes ``convert`` give up what it still collects.

    Example::

        writer = QuadWriter(StoreLocation.parse("provenance").open_session().target("run-1"))
        writer.append(quad)
        writer.flush()   # stored when this returns
        writer.close()
    """

    def __init__(
        self,
        target: WriteTarget | Callable[[], WriteTarget],
        convert: Callable[[Any], Iterable[Quad] | Update] | None = None,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        max_batches: int = DEFAULT_MAX_BATCHES,
        hand_over_s: float = DEFAULT_HAND_OVER_S,
        last_items: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        self._last_items = last_items
        self._opener: Callable[[], WriteTarget] | None = target if callable(target) else None
        self._store: WriteTarget | None = None if callable(target) else target
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._open_error_raised = False
        if self._opener is None:
            self._opened.set()
        self._convert = convert or _no_conversion
        self._max_buffered = max_buffered
        self._hand_over_s = hand_over_s
        self._buffer: list[Any] = []
        self._oldest_at: float | None = None
        self._handed_at = 0.0  # time.monotonic() of the last hand-over without waiting
        self._batches: queue.Queue[list[Any] | None] = queue.Queue(maxsize=max_batches)  # back-pressure
        self._failed: list[Any] = []  # in order: what a failed write left, tried again when due
        self._failures = WriteFailures()
        self._written = 0  # writer thread: items of the current write already stored
        self._writing = 0  # items of the current write (not counting earlier failures)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="cnnprov-writer", daemon=True)
        self._thread.start()
        # Flush on interpreter exit too; a weak reference keeps atexit from pinning the writer.
        self._atexit = _weak_close(self)
        atexit.register(self._atexit)

    # -- training thread -------------------------------------------------
    def append(self, item: Any, at: float | None = None) -> None:
        """Buffer one item. Constant time, unless the writer thread is ``max_batches`` behind.

        ``at`` (seconds, e.g. ``time.time()``) marks an item that should reach
        the store soon even without a flush: an item stamped ``hand_over_s`` or
        more after the oldest stamped one sends the buffer to the writer thread
        (a lone item waits for the next flush).
        """
        buffer = self._buffer
        buffer.append(item)
        if len(buffer) >= self._max_buffered:
            self.flush(wait=False)
        elif at is not None:
            oldest = self._oldest_at
            if oldest is None:
                self._oldest_at = at
            elif at - oldest >= self._hand_over_s:
                self.flush(wait=False)

    def extend(self, items: Iterable[Any]) -> None:
        self._buffer.extend(items)
        if len(self._buffer) >= self._max_buffered:
            self.flush(wait=False)

    @property
    def opening(self) -> bool:
        """Whether the store is still being opened on the writer thread."""
        return not self._opened.is_set()

    def wait_open(self, raise_error: bool = True) -> WriteTarget | None:
        """Wait until the target is open and return it.

        Raises what opening it raised (returns ``None`` instead without ``raise_error``).
        """
        self._opened.wait()
        if self._open_error is not None and raise_error:
            self._open_error_raised = True
            raise self._open_error
        return self._store

    def hand_over(self) -> None:
        """:meth:`flush` without waiting, at most once per ``hand_over_s``: the writer thread
        gets what is buffered, and many calls in a row cost one write."""
        if self._buffer and time.monotonic() - self._handed_at >= self._hand_over_s:
            self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        """Hand what is buffered to the writer thread; with ``wait``, return once it is stored."""
        if self._closed:
            return
        batch, self._buffer = self._buffer, []
        self._oldest_at = None
        if not wait:
            if batch or self._failed:
                self._handed_at = time.monotonic()
                self._batches.put(batch)
            return
        reported = self._open_error_raised
        if self.wait_open(raise_error=not reported) is None:  # no store, and its error reported already
            return
        if self._failed or (batch and not all(isinstance(item, (Quad, Replace)) for item in batch)):
            # items to convert, or earlier failures to retry: the writer thread's work
            self._batches.put(batch)
            batch = []
        self._batches.join()
        if batch:
            # Ready-made quads (a checkpoint, an epoch's end): with the writer thread idle, storing
            # them here costs less than waking it and waiting for it to answer.
            self._store_items(batch)
        self._raise_pending_error()

    def close(self, wait: bool = True) -> None:
        """Store everything buffered and stop the thread. Safe to call twice.

        Everything is durable when this returns; with ``wait=False`` the thread ends in the
        background. The target stays open: it belongs to its session.
        """
        if self._closed:
            return
        for item in self._last_items() if self._last_items is not None else ():
            self.append(item)
        self._failures.retry_now()  # a last try, whenever the last failure was
        try:
            with contextlib.suppress(StoreWriteError):  # what it could not write is spilled below, or named lost
                self.flush(wait=True)
            if self._failed:
                self._spill_failed()
            if self._failed:
                error, self._error = self._error, None
                raise StoreWriteError(
                    f"cnnprov could not write {len(self._failed)} records to the provenance store ({error}), "
                    f"nor keep them in a spill file: they are lost"
                ) from error
            self._error = None
        finally:
            self._closed = True
            self._batches.put(None)
            atexit.unregister(self._atexit)
            if wait:
                self._thread.join()

    @property
    def pending(self) -> int:
        """Items buffered or in flight that are not stored yet."""
        queued = sum(len(batch) for batch in list(self._batches.queue) if batch)
        return len(self._buffer) + queued + self._writing + len(self._failed)

    # -- writer thread ---------------------------------------------------
    def _run(self) -> None:
        batches = self._batches
        if self._opener is not None:
            try:
                self._store = self._opener()
            except BaseException as error:  # raised to the caller at its next wait
                self._open_error = error
            finally:
                self._opened.set()
        while True:
            taken = [batches.get()]
            # Whatever else waits goes into the same write: fewer transactions when behind.
            while taken[-1] is not None:
                try:
                    taken.append(batches.get_nowait())
                except queue.Empty:
                    break
            stop = taken[-1] is None
            if self._open_error is not None:  # no store: nothing can be stored
                for _ in taken:
                    batches.task_done()
                if stop:
                    return
                continue
            try:
                self._store_items([item for batch in taken if batch is not None for item in batch])
            finally:
                for _ in taken:
                    batches.task_done()
            if stop:
                return

    def _store_items(self, batch: list[Any]) -> None:
        """Store earlier failures and ``batch``; on an error keep what was not stored, to retry."""
        failures = self._failures
        if not failures.due():
            self._failed.extend(batch)  # not yet: retrying at every hand-over costs more each time
            return
        items = self._failed + batch if self._failed else batch
        if failures.failing:
            recover(self._store)  # RocksDB keeps a handle in error after ENOSPC: a new one writes
        self._written = 0
        self._writing = len(batch)
        try:
            if items:
                self._write(items)
            self._failed = []
            failures.succeeded(len(items), self._where())
        except BaseException as error:
            self._failed = items[self._written :]
            # without its traceback, whose frames hold the store's handle: a reopen needs it let go of
            self._error = error.with_traceback(None)
            failures.failed(error, len(self._failed), self._where())
        finally:
            self._writing = 0

    def _where(self) -> str:
        return repr(getattr(self._store, "where", "") or self._store)

    def _spill_failed(self) -> None:
        """The writer closes with records its store still refuses: keep them in the target's spill
        file (and say how to write them), or say that they are lost."""
        count = len(self._failed)
        path = spill(self._store, as_updates(self._failed, self._converted))
        if path is None:
            return  # _raise_pending_error says what was lost
        self._failed, self._error = [], None
        log.warning(
            "cnnprov could not write %d records to the provenance store %s; they are kept in '%s'. "
            "Write them when it takes writes again: cnnprov push --store %s %s",
            count, self._where(), path, getattr(self._store, "where", "<the store>"), path,
        )

    def _write(self, items: list[Any]) -> None:
        """Store ``items`` in order; ``self._written`` counts those stored, should one write fail.

        An item is converted once: its quads (or update) replace it in ``items``, so that a
        write that fails is retried with what it was, not converted again (conversion may keep
        state, such as a run's count of values and its summaries).
        """
        target = self._store
        assert target is not None  # opened: the writer thread stores nothing otherwise
        quads: list[Quad] = []
        for index, item in enumerate(items):
            if not isinstance(item, (Quad, Replace, Update, Converted)):
                item = items[index] = self._converted(item)
            if isinstance(item, Quad):
                quads.append(item)
            elif isinstance(item, Converted):
                quads.extend(item.quads)
            else:  # a Replace or an Update: after the quads before it
                if _folds(item, quads):  # one transaction: a write costs ~0.4 ms however small
                    target.update(f"{insert_operation(quads)} ;\n{item.sparql}")
                else:
                    self._store_quads(quads)
                    self._written = index
                    if isinstance(item, Replace):
                        target.replace(item.subject, item.predicate, item.graph, item.objects)
                    else:
                        target.update(item.sparql)
                quads = []
                self._written = index + 1
                continue
            if len(quads) >= TRANSACTION_QUADS:
                self._store_quads(quads)
                self._written = index + 1
                quads = []
        self._store_quads(quads)
        self._written = len(items)

    def _converted(self, item: Any) -> Update | Converted:
        """``item`` converted; an item whose conversion fails is dropped alone (and said so), so that
        no other record is lost with it and it is never retried."""
        try:
            converted = self._convert(item)
        except Exception as error:
            log.warning(
                "cnnprov could not record one %s (%s: %s); the records around it are kept",
                type(item).__name__,
                type(error).__name__,
                error,
            )
            return Converted([])
        return converted if isinstance(converted, Update) else Converted(list(converted))

    def _store_quads(self, quads: list[Quad]) -> None:
        if not quads or self._store is None:
            return
        # One transaction; pyoxigraph writes with the GIL released, so the training thread runs on.
        # (N-Quads text through Store.load would spare the Python side of building quads, but
        # parsing it cost the store ~60 % more CPU per value: measured in BENCHMARKS.md.)
        self._store.extend(quads)

    def _raise_pending_error(self) -> None:
        if self._error is not None and not self._failed:
            self._error = None
        if self._error is not None:
            if self._failures.reported:
                return  # said once for this failure: training goes on, the records wait
            error, self._error = self._error, None
            self._failures.reported = True
            raise StoreWriteError(
                f"cnnprov could not write {len(self._failed)} buffered records to the provenance "
                f"store ({error}); they are kept in memory and tried again"
            ) from error


def _folds(item: Replace | Update, quads: list[Quad]) -> bool:
    """Whether the few ``quads`` before ``item`` (an epoch's start before the summaries' update) go
    into it as its ``INSERT DATA`` (BENCHMARKS.md 0c)."""
    return isinstance(item, Update) and 0 < len(quads) <= FOLDED_QUADS and not _PROLOGUE.match(item.sparql)


def _no_conversion(item: Any) -> Iterable[Quad]:
    raise TypeError(f"QuadWriter cannot store a {type(item).__name__}; give it a convert function")


def _weak_close(writer: QuadWriter) -> Callable[[], None]:
    ref = weakref.ref(writer)

    def close_at_exit() -> None:
        if (live := ref()) is not None:
            live.close()

    return close_at_exit
