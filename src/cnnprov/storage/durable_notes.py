"""What an embedded store must hold: notes beside it, compared with it whenever it is opened.

RocksDB replays its write-ahead log (the ``*.log`` files) when a store opens, and a damaged
record makes it stop there without a word: every record after it is gone, though each was
durable against a killed process. So the writer notes, outside RocksDB, the last record it knows
durable of each run (:func:`note`: after an epoch's end was committed, in ``cnnprov-durable.json``
in the store directory), and every open compares (:func:`check`): a note the store no longer
satisfies is one warning line naming the store, the run, what it held and what it holds.

Checking is one index lookup a noted run (a few more to say what is left, when one is missing).
A note has done its job once RocksDB has written its memory tables to table files, which it
checksums (damage there is an error when read): :func:`flush` then drops every note the store
satisfies. A note it does not satisfy stays, so that every later open reports the loss too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pyoxigraph as ox

log = logging.getLogger(__name__)

NOTES_FILE = "cnnprov-durable.json"

#: The notes thread writes at most this often: the notes made meanwhile go in one file write. A
#: sweep's short epochs otherwise rewrote the file at every epoch's end (~0.75 ms each, 15 ms a
#: 20-epoch run); a kill in this window leaves the run's note before, which still guards the rest.
NOTE_INTERVAL_S = 0.2

_LOCK = threading.Lock()  # the runs of one session note in turn (each rewrites the file)
_REPORTED: set[tuple[str, str, int]] = set()  # (store, run, index): each loss is said once a process


@dataclass(frozen=True)
class DurableMark:
    """A run's records up to ``index`` are durable: the store holds ``subject_prefix + str(i)``
    ``predicate`` in ``graph`` for ``i = index`` (and, the log being replayed in order, before it).

    ``unit`` names what an index counts in messages (``epoch``); ``name`` is the run's.
    """

    run_id: str
    name: str
    graph: str
    subject_prefix: str
    predicate: str
    index: int
    unit: str = "epoch"

    def holds(self, store: ox.Store, index: int) -> bool:
        """Whether ``store`` holds this mark's record of ``index``."""
        subject = ox.NamedNode(self.subject_prefix + str(index))
        found = store.quads_for_pattern(subject, ox.NamedNode(self.predicate), None, ox.NamedNode(self.graph))
        return next(iter(found), None) is not None

    def last_held(self, store: ox.Store) -> int | None:
        """The highest index up to :attr:`index` that ``store`` holds (``None``: not even 0).

        A bisection: the log is replayed in order, so what survives is the records before the damage.
        """
        if not self.holds(store, 0):
            return None
        low, high = 0, self.index  # low is held; high is not (the caller found it missing)
        while high - low > 1:
            middle = (low + high) // 2
            if self.holds(store, middle):
                low = middle
            else:
                high = middle
        return low


def note(directory: Path, mark: DurableMark) -> None:
    """Note ``mark`` for its run in the store at ``directory`` (replacing the run's last note).

    Returns at once (tens of µs): a thread of its own writes the file (creating one took ~0.3 ms on
    this project's machine), at most every :data:`NOTE_INTERVAL_S`, atomically (a temporary file,
    then ``os.replace``), so that a reader or a kill never meets half a file. A note lost to a
    kill, or one that cannot be written (said at debug level), leaves the run's previous note: it
    guards the record, it is not part of it.
    """
    global _worker
    with _WAKE:
        _PENDING.setdefault(directory, {})[mark.run_id] = mark
        if _worker is not None and _worker[0].is_alive():
            _WAKE.notify_all()
            return
        stop = threading.Event()
        try:
            thread = threading.Thread(target=_write_notes, args=(stop,), name="cnnprov-notes", daemon=True)
            thread.start()
            _worker = (thread, stop)
            return
        except RuntimeError:  # no new threads (the interpreter is exiting): written here instead
            pass
    _write_pending()


_PENDING: dict[Path, dict[str, DurableMark]] = {}  # notes not written yet, by store directory
_WAKE = threading.Condition()
# The thread that writes notes and what stops it: it lives until a flush (a session's end at the
# latest) asks for every note, so that no thread outlives a run.
_worker: tuple[threading.Thread, threading.Event] | None = None


def _write_notes(stop: threading.Event) -> None:
    while True:
        with _WAKE:
            while not _PENDING and not stop.is_set():
                _WAKE.wait()
            if not _PENDING:
                return
        _write_pending()
        stop.wait(NOTE_INTERVAL_S)  # set by written(): what is pending then is written at once


def _write_pending() -> None:
    with _LOCK:
        with _WAKE:
            pending = dict(_PENDING)
            _PENDING.clear()
        for directory, marks in pending.items():
            notes = _read(directory)
            notes.update(marks)
            try:
                _write(directory, notes)
            except OSError as error:
                log.debug("cnnprov could not note what the store %s holds: %s", directory, error)


def written() -> None:
    """Write every note made in this process so far, and end the thread that writes them."""
    global _worker
    with _WAKE:
        worker, _worker = _worker, None  # a later note starts a thread again
        if worker is not None:
            worker[1].set()
            _WAKE.notify_all()
    if worker is not None and worker[0] is not threading.current_thread():
        worker[0].join()
    _write_pending()  # what no thread took (one that died)


def check(store: ox.Store, directory: Path) -> list[str]:
    """Compare the notes of the store at ``directory`` with ``store`` (just opened): one warning a
    run whose noted records the store lacks (once a process). Returns those warnings' texts."""
    messages = []
    for mark in _read(directory).values():
        try:
            if mark.holds(store, mark.index):
                continue
            message = _loss_message(directory, mark, mark.last_held(store))
        except (OSError, RuntimeError, ValueError) as error:  # an IRI that is no IRI: a note not ours
            log.debug("cnnprov could not compare a note with the store %s: %s", directory, error)
            continue
        messages.append(message)
        key = (os.path.realpath(directory), mark.run_id, mark.index)
        if key not in _REPORTED:
            _REPORTED.add(key)
            log.warning("%s", message)
    return messages


def flush(store: ox.Store, directory: Path | None) -> None:
    """Have RocksDB write its memory tables to table files, then drop the notes of the store at
    ``directory`` that the flush made safe: table files are checksummed, damage there is an error.

    Only notes read before the flush are dropped (and only if unchanged since, and satisfied): a
    note is written after its records were committed, so those records were in what was flushed.
    """
    written()  # a note still on its way would stay behind the flush
    before = _read(directory) if directory is not None else {}
    store.flush()  # GIL released
    if not before or directory is None:
        return
    with _LOCK:
        notes = _read(directory)
        kept = {run_id: mark for run_id, mark in notes.items() if not _safe(store, mark, before.get(run_id))}
        if len(kept) == len(notes):
            return
        try:
            if kept:
                _write(directory, kept)
            else:
                (directory / NOTES_FILE).unlink(missing_ok=True)
        except OSError as error:
            log.debug("cnnprov could not update the notes of the store %s: %s", directory, error)


def _safe(store: ox.Store, mark: DurableMark, before: DurableMark | None) -> bool:
    try:
        return mark == before and mark.holds(store, mark.index)
    except (OSError, RuntimeError, ValueError):
        return False


def _loss_message(directory: Path, mark: DurableMark, held: int | None) -> str:
    unit = mark.unit
    holds = f"it holds {unit}s only up to {held}" if held is not None else "it holds none of them"
    return (
        f"cnnprov: the provenance store '{directory}' lost records of run '{mark.name}' ({mark.run_id}): "
        f"its write-ahead log (the *.log files) was damaged and RocksDB dropped every record after the "
        f"damage; {unit}s up to {mark.index} had been stored, {holds}. Keep a copy of the directory; "
        f"`cnnprov export --store {directory}` writes out what can still be read (remove "
        f"'{directory / NOTES_FILE}' to stop this warning once dealt with)"
    )


def _read(directory: Path) -> dict[str, DurableMark]:
    try:
        data = json.loads((directory / NOTES_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:  # unreadable or cut short by hand: nothing to compare
        log.debug("cnnprov could not read the notes of the store %s: %s", directory, error)
        return {}
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, dict):
        return {}
    return {run_id: mark for run_id, entry in runs.items() if (mark := _mark(entry)) is not None}


_FIELDS = tuple(field.name for field in fields(DurableMark))


def _mark(entry: Any) -> DurableMark | None:
    if not isinstance(entry, dict):
        return None
    values: dict[str, Any] = {name: entry.get(name) for name in _FIELDS}
    if not isinstance(values["index"], int) or not all(
        isinstance(value, str) for name, value in values.items() if name != "index"
    ):
        return None
    return DurableMark(**values)


def _write(directory: Path, notes: dict[str, DurableMark]) -> None:
    path = directory / NOTES_FILE
    temporary = path.with_name(f".{NOTES_FILE}.{os.getpid()}.{threading.get_ident()}")
    text = json.dumps({"version": 1, "runs": {run_id: asdict(mark) for run_id, mark in notes.items()}})
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)  # readers never see half a file
