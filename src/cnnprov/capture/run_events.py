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

from cnnprov.capture import architecture_records, records
from cnnprov.capture.architecture import ModelDescription
from cnnprov.capture.conversion import FileDigest, MetricRow, SummariesDue
from cnnprov.capture.hyperparameters import flatten_hyperparameters, scalar
from cnnprov.capture.run_state import RunState
from cnnprov.capture.trainer_settings import trainer_configuration
from cnnprov.errors import RecorderNotStartedError
from cnnprov.rdf import prov_forms
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import CNNPROV, literal, string_literal
from cnnprov.storage.writer import QuadWriter, Replace

#: Builds a MetricRow on the hot path without NamedTuple's Python-level constructor.
_new_row = tuple.__new__


class RunEvents:
    """What a run's caller reports, as records buffered to the run's writer (none before it starts).

    Epoch indices the caller passes are its own count (see :meth:`stage_started`);
    :class:`RunState` maps them to the run's. A subclass provides the writer and
    the store: :meth:`flush` and :meth:`_check_opening`.
    """

    run: NamedNode
    bundle: NamedNode
    base: str
    _writer: QuadWriter | None
    _state: RunState

    def flush(self, wait: bool = True) -> None:
        raise NotImplementedError

    def _check_opening(self) -> None:
        raise NotImplementedError

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
        if texts and self._writer is not None:
            # one literal to list runs by (best-runs): reading every setting of a thousand runs is slow
            listing = ", ".join(f"{name}={text}" for name, text in sorted(texts.items()))
            self._writer.append(Replace(self.run, CNNPROV.hyperparameterList, self.bundle, (string_literal(listing),)))

    def log_trainer_settings(self, python_class: str, settings: Mapping[str, Any]) -> None:
        """Record how the training loop was configured (precision, clipping, limits…), once per run:
        settings named ``trainer.<key>``, of an entity of their own, so ``compare-runs`` tells runs
        apart that differ only there while the model's hyperparameters stay as the user logged them."""
        if self._state.trainer_recorded:
            return
        self._state.trainer_recorded = True
        self._add_all(trainer_configuration(self.run, self.base, python_class, settings))

    def log_architecture(self, model: Any, after_first_step: bool = False) -> None:
        """Record a torch model's layers, in order, with their own settings (once per run).

        With ``after_first_step``, or while a lazy module's parameters are not materialized,
        the record waits for the model's first training step, which the caller brackets with
        :meth:`architecture_step_started` and :meth:`architecture_step_ended`: the layers are
        then in the order they ran, with the functional operations their forwards called. If
        no step completes, the model is recorded as it is when the run (or stage) finishes,
        with a note saying what is not known.
        """
        self._record_architecture(self._state.architecture.request(model, after_first_step))

    def architecture_step_started(self, model: Any) -> None:
        """A training step of ``model`` starts: trace it if the architecture is not recorded yet (cheap after)."""
        self._state.architecture.step_started(model)

    def architecture_step_ended(self) -> None:
        """The step :meth:`architecture_step_started` announced ended: record the architecture it showed."""
        self._record_architecture(self._state.architecture.step_ended())

    def _record_architecture(self, model: ModelDescription | None) -> None:
        if model is not None:
            self._add_all(architecture_records.architecture(self.run, model))

    def log_optimizer(self, index: int, optimizer: Any) -> NamedNode:
        """Record an optimizer's class and every param-group setting (``params`` aside)."""
        state = self._state
        if index in state.optimizers:  # a later stage or attempt: recorded already, lr changes are tracked
            return state.optimizers[index]
        node = state.optimizers[index] = records.optimizer_node(self.run, index)
        groups = optimizer.param_groups
        self._add_all(records.optimizer(self.run, self.base, index, _class_path(optimizer), groups))
        for group_index, group in enumerate(groups):
            if "lr" in group:  # the setting a learning-rate change derives from
                setting = records.setting_node(records.group_node(node, group_index), "lr")
                state.learning_rates[(index, group_index)] = (setting, group["lr"])
        return node

    def log_scheduler(
        self,
        index: int,
        scheduler: Any,
        optimizer_index: int = 0,
        interval: str | None = None,
        frequency: int | None = None,
    ) -> None:
        """Record a learning-rate scheduler, its settings and the optimizer it adjusts."""
        adjusts = self._state.optimizers.get(optimizer_index)
        state = scheduler.state_dict() if hasattr(scheduler, "state_dict") else {}
        self._add_all(
            records.scheduler(self.run, self.base, index, _class_path(scheduler), state, adjusts, interval, frequency)
        )

    def learning_rate_changed(
        self, optimizer_index: int, group_index: int, new_lr: float, epoch: int | None, step: int | None
    ) -> None:
        """Record a learning-rate change as a new setting derived from the previous one.

        ``epoch`` is the caller's (see :meth:`stage_started`).
        """
        state = self._state
        previous = state.learning_rates.get((optimizer_index, group_index))
        if previous is None or previous[1] == new_lr:
            return
        state.adaptations += 1
        if epoch is not None:
            epoch = state.run_epoch(epoch)
        group = records.group_node(state.optimizers[optimizer_index], group_index)
        self._add_all(
            records.learning_rate_adaptation(
                self.run, self.base, state.adaptations, group, previous[0], new_lr, time.time(), epoch, step
            )
        )
        state.learning_rates[(optimizer_index, group_index)] = (
            records.adapted_setting_node(group, state.adaptations),
            new_lr,
        )

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
        so far) are rewritten from here, on the writer thread while the epoch trains, and at
        :meth:`finish`.
        """
        state = self._state
        if state.ended_epochs or self._writer is None:
            self.flush(wait=True)
        else:
            self._check_opening()
        index = state.run_epoch(index)
        state.ended_epochs.discard(index)
        state.current_epoch = index
        if index in state.epochs:
            # Recorded already: a resumed attempt re-enters it. It stays one activity with its first start.
            state.reopened_epochs.add(index)
            return
        when = when or time.time()
        state.epochs[index] = when
        self._add_all(records.epoch_start(self.run, index, when, index - 1 in state.epochs))
        state.epoch_statistics.started = len(state.epochs)
        # Summaries (of the epoch that ended, and this one's start) are rewritten now, while the
        # epoch trains: they are derived data, and their update (~1.5 ms) stays out of the wait above.
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
        end = records.epoch_end(records.epoch_node(self.run, index), started, when)
        if index in state.reopened_epochs and self._writer is not None:  # it may have ended once already
            for subject, predicate, obj in end:
                self._writer.append(Replace(subject, predicate, self.bundle, (obj,)))
        else:
            self._add_all(end)
        state.ended_epochs.add(index)
        state.epoch_statistics.ended(index, when - started)
        self.flush(wait=False)

    def _summaries_due(self) -> None:
        if self._writer is not None:
            self._writer.append(SummariesDue(self._state.epoch_statistics.snapshot()))

    def stage_ended(self) -> None:
        """Training stopped: later metrics (test, validate) belong to the run, not an epoch."""
        self._state.current_epoch = None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer metric values (the hot path: one tuple append).

        An ``epoch`` key, as Lightning adds, gives the values' epoch (the
        caller's, see :meth:`stage_started`) and is not itself stored as a metric.
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
            writer.append(_new_row(MetricRow, (metrics, step, now, state.current_epoch)), now)

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
        """Buffer one triple of the run's graph; usage and generation get their qualified form too."""
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


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
