"""Record one training run as W3C PROV-O, in a named graph of its own.

:class:`RunRecorder` knows PROV, not Lightning: a Lightning logger, a Fabric
loop or a plain PyTorch loop drives it with calls such as "epoch 3 started" or
"val_acc was 0.91 at step 120". Rare events become quads at once (built by
:mod:`cnnprov.capture.records`); metric values, which can number millions, are
buffered as tuples and become quads on the writer thread
(:class:`~cnnprov.capture.conversion.MetricConverter`). This module holds the
store, the writer and the run's start and end; the recording calls during the
run come from the base class :class:`~cnnprov.capture.run_events.RunEvents`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pyoxigraph import NamedNode

from cnnprov.capture import records
from cnnprov.capture.conversion import MetricConverter, SeriesDue, SummariesDue
from cnnprov.capture.environment import RunEnvironment, current_environment
from cnnprov.capture.files import file_sha256
from cnnprov.capture.nodes import run_bundle_node, run_node
from cnnprov.capture.resume import RecordedRun, find_checkpoint, find_run, read_run
from cnnprov.capture.run_events import RunEvents
from cnnprov.capture.run_state import RunState
from cnnprov.capture.summary_repair import rewrite_summaries
from cnnprov.rdf.vocab import (
    CNNPROV,
    DEFAULT_BASE,
    MLS,
    PROV,
    datetime_literal,
    double_literal,
    integer_literal,
    string_literal,
)
from cnnprov.storage.crashes import register_repair
from cnnprov.storage.location import StoreLocation
from cnnprov.storage.protocols import Session, WriteTarget
from cnnprov.storage.write_items import Replace
from cnnprov.storage.writer import DEFAULT_MAX_BUFFERED, QuadWriter

__all__ = ["FAILED", "RUNNING", "SUCCESS", "RunRecorder", "file_sha256"]

register_repair(rewrite_summaries)  # a writer that opens a store puts right the summaries of crashed runs

#: Run statuses as recorded (Lightning's ``finalize`` gives the last three).
RUNNING, SUCCESS, FAILED = "running", "success", "failed"
#: How step-level values can be stored (``RunRecorder(step_values=...)``).
STEP_VALUE_FORMS = ("series", "entities")


def checked_step_values(form: str) -> str:
    """``form`` if it is one of :data:`STEP_VALUE_FORMS`; otherwise a ValueError that names them."""
    if form not in STEP_VALUE_FORMS:
        raise ValueError(f"step_values must be one of {', '.join(map(repr, STEP_VALUE_FORMS))}, not {form!r}")
    return form


class RunRecorder(RunEvents):
    """Record one training run as PROV-O quads in an Oxigraph store.

    Args:
        store: directory of the embedded store (default ``$CNNPROV_STORE`` or
            ``./provenance``), created on first use; or the URL of a SPARQL 1.1
            endpoint that many processes share (see :mod:`cnnprov.storage.remote`);
            or a :class:`~cnnprov.storage.location.StoreLocation` with options; or an
            open session (:func:`cnnprov.open_session`) that many runs share.
        name: a human name for the run (default: the run id's first 8 characters).
        run_id: the run's UUID (default: a new one).
        base: namespace under which the run's IRIs are minted.
        max_buffered: buffered records after which a write is started early.
        serve_reads: while the run records, serve read-only SPARQL on 127.0.0.1
            so that other processes can query the store it holds (see :mod:`cnnprov.storage.endpoint`);
            a session given as ``store`` decides that itself.
        step_values: how step-level values (``log_metrics(..., per_step=True)``, or logged while
            :attr:`in_steps`) are stored: ``"series"``, one ``cnnprov:MetricSeries`` per epoch and
            measure with every point in one literal (~40 bytes a value); ``"entities"``, one
            ``mls:ModelEvaluation`` each (~4 KB a value), as epoch-level values always are.

    Example::

        recorder = RunRecorder("provenance", name="baseline")
        recorder.start()
        recorder.log_plan("my_pkg.MyNet")
        recorder.log_hyperparameters({"lr": 0.01})
        recorder.epoch_started(0)
        recorder.log_metrics({"loss": 0.7}, step=0)
        recorder.epoch_ended(0)
        recorder.finish("success")
        recorder.close()   # releases the store
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | StoreLocation | Session | None = None,
        *,
        name: str | None = None,
        run_id: str | None = None,
        base: str = DEFAULT_BASE,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        serve_reads: bool = True,
        step_values: str = "series",
    ) -> None:
        # a session given by the caller is shared (a sweep's); one this recorder opens is its own
        self._shared_session: Session | None = store if isinstance(store, Session) else None
        self.location: StoreLocation = (
            self._shared_session.location
            if self._shared_session is not None
            else StoreLocation.parse(store)  # type: ignore[arg-type]
        )
        self._serve_reads = serve_reads
        self._session: Session | None = None  # the session the current stage writes through
        self._target: WriteTarget | None = None
        self.run_id = run_id or str(uuid.uuid4())
        self.name = name or self.run_id[:8]
        self.base = base
        self.run = run_node(base, self.run_id)
        self.bundle = run_bundle_node(base, self.run_id)
        self._max_buffered = max_buffered
        self._writer: QuadWriter | None = None
        self._lock = threading.Lock()
        self.started_at: float | None = None
        self.status: str | None = None
        self._state = RunState()  # training thread: the run's numbering
        self.step_values = checked_step_values(step_values)
        self._converter = MetricConverter(self.run, self.bundle, base, step_values)  # writer thread (see its docstring)

    # -- lifecycle ---------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._writer is not None

    @property
    def attempt(self) -> str | None:
        """The IRI of the attempt at the run this recorder records (``None`` before :meth:`start`)."""
        node = self._state.attempt
        return node.value if node is not None else None

    def start(
        self,
        environment: RunEnvironment | None = None,
        start_time: float | None = None,
        resume_from: str | os.PathLike | None = None,
        *,
        new_run: bool = False,
        written_by: str | None = None,
    ) -> None:
        """Open the store and record the run, its agents and this attempt at it.

        Idempotent; after :meth:`close` it reopens the store and continues the
        same run (``fit`` then ``test``) within the same attempt.

        A run the store already holds is continued rather than started again:
        the one with this recorder's ``run_id``, or the one that wrote the
        checkpoint file ``resume_from`` (matched by SHA-256, or by ``written_by``, the run id
        the checkpoint names itself, when the process died before its hash was recorded; the
        recorder then takes that run's id). The continuation is a new ``cnnprov:Attempt``
        that ``prov:wasInformedBy`` the previous attempt and ``prov:used`` the
        checkpoint; epochs, values and checkpoints are numbered after those
        already stored. A ``resume_from`` no stored run wrote is recorded as a
        checkpoint the new run used.

        ``new_run=True`` says no stored run has this ``run_id`` (a fresh UUID,
        as :class:`~cnnprov.ProvLogger` makes): with nothing to read first, an
        embedded store opens on the writer thread while the caller goes on, and
        an error opening it (a store another process holds) is raised by the
        first call that waits for the store, :meth:`epoch_started` or :meth:`flush`.
        """
        with self._lock:
            if self._writer is not None:
                return
            recorded = checkpoint = None
            target: WriteTarget | Callable[[], WriteTarget]
            if self._shared_session is None and resume_from is None and (new_run or self.started_at is not None):
                # nothing to read first: the store opens on the writer thread while the caller goes on
                self._session = self.location.open_session(serve_reads=self._serve_reads, lazy=True)
                target = self._open_target
            else:
                session = self._open_session()
                if self.started_at is None and (resume_from is not None or not new_run):
                    # read first: this run may be stored already
                    recorded, checkpoint = self._recorded_run(session, resume_from, written_by)
                target = self._target = session.target(self.run_id)
            self._writer = QuadWriter(
                target,
                convert=self._converter,
                max_buffered=self._max_buffered,
                last_items=partial(_closing_items, self._state),
            )
            # A new writer: what the last one believed it wrote may not have reached the store (its
            # failed writes are dropped with it), so summaries are replaced whole once more.
            self._converter.new_writer(self.run, self.bundle)
            if self.started_at is not None:
                return
        self.started_at = start_time or time.time()
        self.status = RUNNING
        env = environment or current_environment()
        if recorded is not None:
            self._continue(recorded, env, checkpoint)
            if checkpoint is None and resume_from is not None and recorded.run_id == written_by:
                # the run wrote it, but was killed before recording it: recorded now, used by this attempt
                attempt = self._state.attempt
                node = self.log_checkpoint(resume_from)
                if attempt is not None:
                    self._add_all(records.resumed_from(attempt, node))
                self.flush()
            return
        self._add_all(records.run_records(self.run, self.bundle, self.name, self.run_id, self.started_at, RUNNING, env))
        self._add_all(records.agents(self.run, self.bundle, self.base, env))
        if checkpoint is None and resume_from is not None:
            checkpoint = self._input_checkpoint(resume_from)
        self._begin_attempt(env, 1, None, checkpoint, self.started_at)
        self.flush(wait=not new_run)  # a new run's start is durable by its first epoch's end

    def _open_session(self) -> Session:
        """The session this stage writes through: the shared one, or one of this recorder's own."""
        session = self._shared_session or self.location.open_session(serve_reads=self._serve_reads)
        self._session = session
        return session

    def _open_target(self) -> WriteTarget:
        """Writer thread: the run's target in its (lazily opening) session."""
        assert self._session is not None
        target = self._target = self._session.target(self.run_id)
        return target

    def _recorded_run(
        self, session: Session, resume_from: str | os.PathLike[str] | None, written_by: str | None = None
    ) -> tuple[RecordedRun | None, Any]:
        """The stored run this recorder continues (and the checkpoint it resumes from), if any."""
        store = session.reader
        if resume_from is not None:
            try:
                found = find_checkpoint(store, file_sha256(resume_from))
            except OSError:  # not a local file (a URL, a removed file): nothing to match
                found = None
            if found is not None:
                checkpoint, run, bundle = found
                recorded = self._adopt(store, run, bundle)
                if recorded is not None:
                    return recorded, checkpoint
            stored = find_run(store, written_by) if written_by is not None and written_by != self.run_id else None
            if stored is not None:
                recorded = self._adopt(store, *stored)
                if recorded is not None:
                    return recorded, None
        # by its id, not its IRI: a run an earlier version recorded has IRIs of another shape
        stored = find_run(store, self.run_id)
        if stored is None:
            return None, None
        self.run, self.bundle = stored
        return read_run(store, *stored), None

    def _adopt(self, store: Any, run: NamedNode, bundle: NamedNode) -> RecordedRun | None:
        """The stored run ``run`` (in ``bundle``), which this recorder then continues: its ids and name."""
        recorded = read_run(store, run, bundle)
        if recorded is not None:
            self.run, self.bundle, self.run_id = run, bundle, recorded.run_id
            self.name = recorded.name or self.name
        return recorded

    def _continue(self, recorded: RecordedRun, env: RunEnvironment, checkpoint: NamedNode | None) -> None:
        """Pick up a stored run: its numbering, its open status, and a new attempt."""
        self.started_at = recorded.started_at or self.started_at
        self._state.continue_from(recorded, checkpoint)
        # nothing converts yet: this start buffered only quads and replacements so far
        self._converter.continue_run(recorded.values, recorded.series, recorded.summaries)
        run, graph, writer = self.run, self.bundle, self._writer
        assert writer is not None  # start() made it
        writer.append(Replace(run, CNNPROV.status, graph, (string_literal(RUNNING),)))
        for predicate in (PROV.endedAtTime, CNNPROV.durationSeconds, CNNPROV.errorType, CNNPROV.errorMessage):
            writer.append(Replace(run, predicate, graph))
        writer.append(Replace(run, CNNPROV.hostname, graph, (string_literal(env.hostname),)))
        writer.append(Replace(run, CNNPROV.processId, graph, (integer_literal(env.process_id),)))
        self._add_all(records.agents(run, graph, self.base, env))
        previous = records.attempt_node(run, recorded.attempts) if recorded.attempts else None
        self._begin_attempt(env, recorded.attempts + 1, previous, checkpoint, time.time())
        self.flush()

    def _begin_attempt(
        self,
        env: RunEnvironment,
        index: int,
        previous: NamedNode | None,
        checkpoint: NamedNode | None,
        started: float,
    ) -> None:
        self._state.attempt = records.attempt_node(self.run, index)
        self._add_all(records.attempt(self.run, index, started, RUNNING, env, previous, checkpoint))

    def _input_checkpoint(self, path: str | os.PathLike) -> NamedNode | None:
        """A checkpoint file the run starts from that no stored run wrote."""
        file = Path(path)
        if not file.is_file():
            return None
        node = self._state.latest_checkpoint = records.checkpoint_node(self.run, "input")
        self._add_all(records.input_checkpoint(node, str(file.resolve()), file.stat().st_size, file_sha256(file)))
        return node

    def finish(self, status: str = SUCCESS, error: BaseException | None = None) -> None:
        """Record the end of the run (or of its latest stage) and store everything buffered.

        Safe to call more than once: a later call (``fit`` then ``test``) moves
        the end time and status forward. Keeps the store open for further stages;
        :meth:`close` releases it.
        """
        if self._writer is None:
            return
        state = self._state
        self._record_architecture(state.architecture.pending())  # no step was traced: the model as it is now
        ended = time.time()
        current = state.current_epoch
        if current is not None and current in state.epochs and current not in state.ended_epochs:
            self._end_epoch(current, ended)  # the stage stopped inside this epoch (an index of the run's)
        state.current_epoch = None
        self._write_learning_rates(ended)  # changes outside any epoch (a loop that reports none)
        self._series_due(None, every=True, when=ended)  # step values of a test stage, or outside epochs
        if self.status == FAILED and status != FAILED:
            status = FAILED  # a later clean stage does not undo a failure
        self.status = status
        run, graph = self.run, self.bundle
        self._writer.append(Replace(run, CNNPROV.status, graph, (string_literal(status),)))
        self._writer.append(Replace(run, PROV.endedAtTime, graph, (datetime_literal(ended),)))
        self._writer.append(
            Replace(run, CNNPROV.durationSeconds, graph, (double_literal(ended - (self.started_at or ended)),))
        )
        attempt = state.attempt
        if attempt is not None:
            self._writer.append(Replace(attempt, CNNPROV.status, graph, (string_literal(status),)))
            self._writer.append(Replace(attempt, PROV.endedAtTime, graph, (datetime_literal(ended),)))
        if error is not None:
            error_type, message = string_literal(type(error).__qualname__), string_literal(_error_text(error))
            for node in (run, attempt) if attempt is not None else (run,):
                self._writer.append(Replace(node, CNNPROV.errorType, graph, (error_type,)))
                self._writer.append(Replace(node, CNNPROV.errorMessage, graph, (message,)))
        if state.latest_checkpoint is not None and state.checkpoints:  # not a checkpoint it only started from
            self._add(run, MLS.hasOutput, state.latest_checkpoint)
        self._summaries_due(now=True)  # values of a test stage, or of an epoch cut short
        self.flush()
        self._note_durable()

    def close(self, wait: bool = False) -> None:
        """Store everything buffered and release the store (a shared session stays open). Safe to call twice.

        The store is let go of in the background (opens of it in this process wait for that);
        with ``wait`` before this returns, so that no thread of the run outlives it.
        """
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.wait_open(raise_error=False)  # close() reports errors; the target is open, or never will be
        try:
            writer.close()
        finally:
            target, self._target = self._target, None
            if target is not None:
                target.close()  # says where unsent records wait, if an endpoint is away
            session, self._session = self._session, None
            if session is not None and session is not self._shared_session:
                session.close(wait=wait)  # memory tables to disk and the store let go of

    def flush(self, wait: bool = True) -> None:
        """Hand buffered records to the writer; with ``wait``, return once they are durable."""
        if self._writer is not None:
            self._writer.flush(wait=wait)

    def hand_over(self) -> None:
        """Send buffered records on to be written soon, without waiting; cheap to call at every step."""
        if self._writer is not None:
            self._writer.hand_over()

    def _check_opening(self) -> None:
        """Raise now if the store could not be opened, or cannot be: another live process holds it."""
        writer = self._writer
        if writer is not None and (not writer.opening or self.location.held_by_another_process()):
            writer.wait_open()


def _closing_items(state: RunState) -> list[SeriesDue | SummariesDue]:
    """As a writer closes (at interpreter exit too): the step-level values of an epoch still open
    are stored, and the run's summaries brought up to date."""
    return [SeriesDue(None, True, time.time()), SummariesDue(state.epoch_statistics.snapshot(), now=True)]


def _error_text(error: BaseException) -> str:
    """An exception's message; its repr when the message is empty (``KeyboardInterrupt()``)."""
    try:
        return str(error) or repr(error)
    except Exception:  # a broken __str__ must not hide the failure
        return type(error).__qualname__
