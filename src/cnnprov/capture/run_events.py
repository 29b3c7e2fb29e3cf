"""The recording calls of a run: each event of training becomes records of the run.

:class:`RunEvents` is the half of :class:`~cnnprov.capture.recorder.RunRecorder`
that turns "epoch 3 started" or "val_acc was 0.91" into records (built by
:mod:`cnnprov.capture.records`, numbered by the run's
:class:`~cnnprov.capture.run_state.RunState`) and buffers them to the run's
writer; the recorder adds the store, the writer's lifecycle and the run's start and end.
Everything here runs on the training thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pyoxigraph import NamedNode, Quad

from cnnprov.capture import records
from cnnprov.capture.conversion import FileDigest, MetricRow, SeriesDue, SummariesDue
from cnnprov.capture.hyperparameters import flatten_hyperparameters, scalar
from cnnprov.capture.nodes import epoch_prefix
from cnnprov.capture.run_state import RunState
from cnnprov.capture.setup_events import SetupEvents
from cnnprov.errors import RecorderNotStartedError, StoreWriteError
from cnnprov.rdf import prov_forms
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import CNNPROV, MLS, PROV, child, integer_literal, literal, string_literal
from cnnprov.storage.durable_notes import DurableMark
from cnnprov.storage.location import StoreLocation
from cnnprov.storage.write_items import Replace
from cnnprov.storage.writer import QuadWriter

#: Builds a MetricRow on the hot path without NamedTuple's Python-level constructor.
_new_row = tuple.__new__


class RunEvents(SetupEvents):
    """What a run's caller reports, as records buffered to the run's writer (none before it starts).

    What the run trains with (model, optimizers and their rates, the loop's settings) is
    recorded by the base class :class:`~cnnprov.capture.setup_events.SetupEvents`.
    Epoch indices the caller passes are its own count (see :meth:`stage_started`);
    :class:`RunState` maps them to the run's. A subclass provides the writer and
    the store: :meth:`flush` and :meth:`_check_opening`.
    """

    #: Record what each epoch used of the machine (CPU time, peak memory, time per step; see
    #: :mod:`cnnprov.capture.resource_use`). ``ProvLogger(resource_use=False)`` turns it off.
    resource_use: bool = True

    def step_started(self) -> None:
        """A training step begins: its time goes into the epoch's resource use."""
        self._state.meter.step_started()

    def step_ended(self) -> None:
        """The training step ended."""
        self._state.meter.step_ended()


    run: NamedNode
    bundle: NamedNode
    run_id: str
    name: str
    location: StoreLocation
    base: str
    _writer: QuadWriter | None
    _state: RunState

    def flush(self, wait: bool = True) -> None:
        raise NotImplementedError

    def _check_opening(self) -> None:
        raise NotImplementedError

    def _note_durable(self) -> None:
        """After a wait for the store: the epoch that ended last is durable, which is noted beside the
        store, where later opens compare (a damaged write-ahead log drops records without a word)."""
        writer, epoch, state = self._writer, self._state.last_ended, self._state
        if writer is None or epoch is None or epoch == state.noted_durable or writer.pending:
            return  # nothing new, or records the store refused wait still: not durable
        state.noted_durable = epoch
        prefix, ended = epoch_prefix(self.run), PROV.endedAtTime.value
        self.location.note_durable(DurableMark(self.run_id, self.name, self.bundle.value, prefix, ended, epoch))

    @property
    def last_epoch(self) -> int | None:
        """The highest epoch index recorded for this run so far (stored ones included)."""
        return self._state.last_epoch

    def log_plan(self, plan: str) -> None:
        """Record the code the run executed (e.g. the LightningModule class) as its plan."""
        self._add_all(records.plan(self.run, self.base, plan))

    # -- what the run used -------------------------------------------------
    def log_hyperparameters(self, params: Any, source: str | None = None) -> None:
        """Record hyperparameters (nested ones flattened to dotted paths) as ML Schema settings."""
        texts = self._state.hyperparameter_texts
        for path, value in flatten_hyperparameters(params):
            self._add_all(records.hyperparameter_setting(self.run, self.base, self.run, path, value, path))
            term = literal(scalar(value))
            texts[path] = "None" if isinstance(term, NamedNode) else term.value
        self._write_listing()

    def update_hyperparameters(self, values: Mapping[str, Any]) -> None:
        """Hyperparameters (dotted paths) whose value changed since they were logged, before training
        started (a learning-rate finder set one): the run's setting takes the value now held."""
        texts, writer = self._state.hyperparameter_texts, self._writer
        if writer is None:
            return
        for path, value in values.items():
            if path not in texts:
                self.log_hyperparameters({path: value})
                continue
            term = literal(scalar(value))
            node = records.setting_node(self.run, path)
            writer.append(Replace(node, MLS.hasValue, self.bundle, () if isinstance(term, NamedNode) else (term,)))
            texts[path] = "None" if isinstance(term, NamedNode) else term.value
        self._write_listing()

    def _write_listing(self) -> None:
        texts = self._state.hyperparameter_texts
        if texts and self._writer is not None:
            # one literal to list runs by (best-runs): reading every setting of a thousand runs is slow
            listing = ", ".join(f"{name}={text}" for name, text in sorted(texts.items()))
            self._writer.append(Replace(self.run, CNNPROV.hyperparameterList, self.bundle, (string_literal(listing),)))

    def log_dataset(
        self,
        role: str,
        dataset_class: str | None = None,
        sample_count: int | None = None,
        batch_size: int | None = None,
        batch_count: int | None = None,
    ) -> None:
        """Record the data a stage used (role: train, validation, test or predict)."""
        self._add_all(records.dataset(self.run, role, dataset_class, sample_count, batch_size, batch_count))

    def data_seen(self, role: str, batch_count: int) -> None:
        """The data of ``role`` gave ``batch_count`` batches in an epoch, which its loader could not
        say beforehand (an ``IterableDataset`` has no length)."""
        if self._writer is not None:
            node = child(self.run, "data", role)
            self._writer.append(Replace(node, CNNPROV.batchCount, self.bundle, (integer_literal(batch_count),)))

    # -- what happens during training ----------------------------------------
    def stage_started(self, training: bool, epoch: int = 0, *, restored: bool = False, name: str | None = None) -> None:
        """A stage of the caller starts (Lightning's ``fit``, ``validate``, ``test``), its epoch counter at ``epoch``.

        From here the epoch indices the caller passes (to :meth:`epoch_started`,
        :meth:`epoch_ended`, :meth:`log_checkpoint`, :meth:`learning_rate_changed`,
        and a metrics' ``epoch`` key) are its own count: a training stage's are
        numbered after the epochs already recorded, so a second ``fit`` on a new
        Trainer (which counts from 0 again) continues the run's epochs, unless
        the caller ``restored`` its count from a checkpoint (then it is the run's).
        Outside training a metric's ``epoch`` key is dropped: a test value is no epoch's.
        Callers that never call this pass the run's own indices. ``name`` (``fit``, ``test`` …)
        is recorded as one of the run's stages (``cnnprov runs`` shows them: a run that only tested
        is told apart from one that trained).
        """
        if name:
            self._add(self.run, CNNPROV.stage, string_literal(name))
        self._state.number_stage(training, epoch, restored)

    def epoch_started(self, index: int, when: float | None = None) -> None:
        """An epoch began (``index``: the caller's, see :meth:`stage_started`).

        Everything recorded before it is durable when this returns.

        Before the first epoch that this process trains of a run there is no epoch to make
        durable, and a new run's store may still be opening: then this returns at once, unless
        opening failed or another live process holds the store (the error is raised here, before
        any step trains). The run's summaries (its epoch counts and times, each measure's values
        so far) are rewritten from here, on the writer thread while the epoch trains, if a while
        has passed since they last were (short epochs would rewrite them as often as they write
        their own records), and at :meth:`finish` and the writer's close whatever the time.
        """
        state = self._state
        self._write_learning_rates()  # changes of an epoch that never ended are its own, not this one's
        self._series_due(None, every=True)  # step values of an epoch that never ended, likewise
        refused: StoreWriteError | None = None
        if state.ended_epochs or self._writer is None:
            try:
                self.flush(wait=True)
                self._note_durable()
            except StoreWriteError as error:  # the store refuses writes: this epoch is recorded all the same
                refused = error
        else:
            self._check_opening()
        try:
            self._start_epoch(state.run_epoch(index), when)
        finally:
            if refused is not None:
                raise refused  # once the epoch's start waits with the rest

    def _start_epoch(self, index: int, when: float | None) -> None:
        state = self._state
        state.ended_epochs.discard(index)
        state.current_epoch = index
        if self.resource_use:
            state.meter.start()
        if index in state.epochs:
            # Recorded already: a resumed attempt re-enters it. It stays one activity with its first start.
            state.reopened_epochs.add(index)
            return
        when = when or time.time()
        state.epochs[index] = when
        self._add_all(records.epoch_start(self.run, index, when, index - 1 in state.epochs))
        state.epoch_statistics.started = len(state.epochs)
        # Summaries (of the epochs that ended, and this one's start) are rewritten now, while the
        # epoch trains, unless they were a moment ago: they are derived data, and their update
        # (~1.5 ms) stays out of the wait above.
        self._summaries_due()
        self.flush(wait=False)

    def epoch_ended(self, index: int, when: float | None = None) -> None:
        """An epoch ended (``index``: the caller's); its records start on their way to the store without waiting."""
        self._end_epoch(self._state.run_epoch(index), when)

    def _end_epoch(self, index: int, when: float | None) -> None:
        """Epoch ``index`` of the run ended."""
        state = self._state
        started = state.epochs.get(index)
        if started is None:
            return
        when = when or time.time()
        self._write_learning_rates(when)
        self._series_due(index, when=when)
        end = records.epoch_end(records.epoch_node(self.run, index), started, when)
        usage = state.meter.finish() if self.resource_use else None
        if usage is not None:
            end += records.resource_use(records.epoch_node(self.run, index), usage)
        if index in state.reopened_epochs and self._writer is not None:  # it may have ended once already
            for subject, predicate, obj in end:
                self._writer.append(Replace(subject, predicate, self.bundle, (obj,)))
        else:
            self._add_all(end)
        state.ended_epochs.add(index)
        state.last_ended = index
        state.epoch_statistics.ended(index, when - started)
        self.flush(wait=False)

    def _series_due(self, epoch: int | None, every: bool = False, when: float | None = None) -> None:
        """The step-level values of ``epoch`` (or of every epoch) are to be written as series now."""
        if self._writer is not None:
            self._writer.append(SeriesDue(epoch, every, when or time.time()))

    def _summaries_due(self, now: bool = False) -> None:
        """The run's summaries are to be rewritten: ``now``, or if a while has passed since the last
        rewrite (:data:`~cnnprov.capture.conversion.SUMMARY_INTERVAL_S`)."""
        if self._writer is not None:
            self._writer.append(SummariesDue(self._state.epoch_statistics.snapshot(), now))

    def stage_ended(self) -> None:
        """Training stopped: later metrics (test, validate) belong to the run, not an epoch."""
        self._state.current_epoch = None

    @property
    def in_steps(self) -> bool:
        """Whether values logged now are step-level (see :meth:`log_metrics`); an integration sets it
        as its loop enters and leaves the batches of an epoch."""
        return self._state.in_steps

    @in_steps.setter
    def in_steps(self, value: bool) -> None:
        self._state.in_steps = value

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, per_step: bool | None = None) -> None:
        """Buffer metric values (the hot path: one tuple append).

        An ``epoch`` key, as Lightning adds, gives the values' epoch (the
        caller's, see :meth:`stage_started`) and is not itself stored as a metric.

        ``per_step`` says the values were logged at a step (``train_loss_step``), not once for
        an epoch (``val_loss``); by default :attr:`in_steps` says. Step-level values with a ``step``
        are stored as one ``cnnprov:MetricSeries`` per epoch and measure (written when the epoch
        ends), unless the recorder was made with ``step_values="entities"``; the others are one
        ``mls:ModelEvaluation`` each.
        """
        writer = self._writer
        if writer is None:
            _not_started()
        else:
            state = self._state
            if state.outside_training or state.epoch_offset:  # checked here: most calls need no mapping
                metrics = state.run_metrics(metrics)
            now = time.time()
            # stamped: the writer thread gets the values within ms and stores them while training goes on
            per_step = state.in_steps if per_step is None else per_step
            writer.append(_new_row(MetricRow, (metrics, step, now, state.current_epoch, per_step)), now)

    def log_checkpoint(
        self,
        path: str | os.PathLike,
        epoch: int | None = None,
        step: int | None = None,
        monitor: str | None = None,
        score: float | None = None,
    ) -> NamedNode:
        """Record a checkpoint file: size, sha256, score, the epoch that wrote it (the caller's
        index, see :meth:`stage_started`), and its predecessor."""
        state = self._state
        # the step values logged so far go into series now: the checkpoint's state came from them,
        # and a mid-epoch checkpoint is made durable at once (a resume from it starts after them)
        self._series_due(None, every=True)
        file = Path(path)
        if epoch is not None:
            epoch = state.run_epoch(epoch)
        state.checkpoints += 1
        node = records.checkpoint_node(self.run, state.checkpoints)
        size = file.stat().st_size if file.is_file() else None
        generator = records.epoch_node(self.run, epoch) if epoch in state.epochs else self.run
        if epoch is not None and epoch not in state.epochs:
            # saved after training (Lightning's counter then names an epoch that never ran): the
            # state is the last epoch's, which it is dated to; the run, not that epoch, made it
            epoch = max((index for index in state.epochs if index <= epoch), default=None)
        self._add_all(
            records.checkpoint(
                node, str(file.resolve()), time.time(), generator, size, monitor, score, epoch, step,
                state.latest_checkpoint,
            )
        )
        if size is not None and self._writer is not None:  # hashed on the writer thread, before the next epoch starts
            self._writer.append(FileDigest(node, str(file), self.bundle))
        state.latest_checkpoint = node
        return node

    # -- quads -------------------------------------------------------------
    def _add(self, subject: NamedNode, predicate: NamedNode, obj: Any) -> None:
        """Buffer one triple of the run's graph; a generation gets its qualified form too."""
        writer = self._writer
        if writer is None:
            _not_started()
        else:
            bundle = self.bundle
            for triple in prov_forms.with_qualified_form(subject, predicate, obj):
                writer.append(Quad(*triple, bundle))

    def _add_all(self, triples: Iterable[Triple]) -> None:
        """Buffer what a builder of :mod:`cnnprov.capture.records` made."""
        for triple in triples:
            self._add(*triple)


def _not_started() -> None:
    raise RecorderNotStartedError(
        "this run's recorder is not recording: call its start() before recording (a RunRecorder "
        "made by hand), or start() again to add to a run after close()"
    )

