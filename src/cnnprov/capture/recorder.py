"""Record one training run as W3C PROV-O, in a named graph of its own.

:class:`RunRecorder` knows PROV, not Lightning: a Lightning logger, a Fabric
loop or a plain PyTorch loop drives it with calls such as "epoch 3 started" or
"val_acc was 0.91 at step 120". Rare events become quads at once; metric values,
which can number millions, are buffered as tuples and become quads on the
writer thread.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyoxigraph import NamedNode, Quad

from cnnprov.capture.architecture import count_parameters, describe_model
from cnnprov.capture.environment import RunEnvironment, current_environment
from cnnprov.capture.hyperparameters import flatten_hyperparameters, scalar
from cnnprov.rdf import prov_forms
from cnnprov.capture.summaries import EpochStatistics, RunningSummary, StoredSummaries
from cnnprov.capture.resume import RecordedRun, find_checkpoint, read_run
from cnnprov.storage.location import StoreLocation
from cnnprov.storage.protocols import Session, WriteTarget
from cnnprov.rdf.vocab import (
    CNNPROV,
    DEFAULT_BASE,
    MLS,
    PROV,
    RDF,
    RDFS,
    child,
    datetime_literal,
    double_literal,
    integer_literal,
    iri,
    iri_segment,
    literal,
    string_literal,
)
from cnnprov.storage.writer import DEFAULT_MAX_BUFFERED, QuadWriter, Replace, Update

#: Run statuses as recorded (Lightning's ``finalize`` gives the last three).
RUNNING, SUCCESS, FAILED, FINISHED = "running", "success", "failed", "finished"


class _MetricRow(tuple):
    """(metrics, step, time, generating epoch or None) as buffered on the hot path."""

    __slots__ = ()


class _SummariesDue(tuple):
    """(epoch statistics,) buffered at epoch starts and stage ends: the writer thread
    rewrites the run's epoch statistics and the summaries of measures logged since."""

    __slots__ = ()


class _FileDigest(tuple):
    """(checkpoint node, file path, graph): the file's SHA-256, computed on the writer thread."""

    __slots__ = ()

    def quads(self) -> list[Quad]:
        node, path, graph = self
        try:
            digest = file_sha256(path)
        except OSError:  # removed before it could be read: size and path are recorded
            return []
        return [Quad(node, CNNPROV.sha256, string_literal(digest), graph)]


class _MetricTerms:
    """The terms a run's metric values repeat, made once and reused (writer thread)."""

    def __init__(self, run: NamedNode, bundle: NamedNode, base: str) -> None:
        self.run = run
        self.bundle = bundle
        self.base = base
        self.value_prefix = child(run, "value", "").value  # "…/value/": the counter, a decimal, follows
        self.generators: dict[int | None, NamedNode] = {None: run}
        self.measures: dict[str, NamedNode] = {}

    def measure(self, name: str) -> NamedNode:
        node = self.measures.get(name)
        if node is None:
            node = self.measures[name] = iri(self.base, "measure", iri_segment(name))
        return node

    def generator(self, epoch: int | None) -> NamedNode:
        node = self.generators.get(epoch)
        if node is None:
            node = self.generators[epoch] = child(self.run, "epoch", str(epoch))
        return node


class RunRecorder:
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
    ) -> None:
        # a session given by the caller is shared (a sweep's); one this recorder opens is its own
        self._shared_session: Session | None = store if isinstance(store, Session) else None
        self.location: StoreLocation = (
            self._shared_session.location if self._shared_session is not None
            else StoreLocation.parse(store)  # type: ignore[arg-type]
        )
        self._serve_reads = serve_reads
        self._session: Session | None = None  # the session the current stage writes through
        self._target: WriteTarget | None = None
        self.run_id = run_id or str(uuid.uuid4())
        self.name = name or self.run_id[:8]
        self.base = base
        self.run = iri(base, "run", iri_segment(self.run_id))
        self.bundle = iri(base, "bundle", iri_segment(self.run_id))
        self._max_buffered = max_buffered
        self._writer: QuadWriter | None = None
        self._lock = threading.Lock()
        self.started_at: float | None = None
        self.status: str | None = None
        self._current_epoch: int | None = None
        self._epochs: dict[int, float] = {}
        self._checkpoint: NamedNode | None = None
        self._checkpoint_count = 0
        self._lr_settings: dict[tuple[int, int], tuple[NamedNode, float]] = {}
        self._adaptations = 0
        self._optimizers: dict[int, NamedNode] = {}
        self._attempt: NamedNode | None = None
        self._reopened_epochs: set[int] = set()
        self._ended_epochs: set[int] = set()
        # writer-thread state for metric conversion
        self._metric_count = 0
        self._measures: set[str] = set()
        self._hyperparameter_texts: dict[str, str] = {}
        self._summaries: dict[str, RunningSummary] = {}
        self._changed_summaries: set[str] = set()
        self._epoch_statistics = EpochStatistics()
        self._stored_summaries: StoredSummaries | None = None  # writer thread: what it last wrote

    # -- lifecycle ---------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._writer is not None

    def start(
        self,
        environment: RunEnvironment | None = None,
        start_time: float | None = None,
        resume_from: str | os.PathLike | None = None,
        *,
        new_run: bool = False,
    ) -> None:
        """Open the store and record the run, its agents and this attempt at it.

        Idempotent; after :meth:`close` it reopens the store and continues the
        same run (``fit`` then ``test``) within the same attempt.

        A run the store already holds is continued rather than started again:
        the one with this recorder's ``run_id``, or the one that wrote the
        checkpoint file ``resume_from`` (matched by SHA-256; the recorder then
        takes that run's id). The continuation is a new ``cnnprov:Attempt``
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
            if self._shared_session is None and resume_from is None and (new_run or self.started_at is not None):
                # nothing to read first: the store opens on the writer thread while the caller goes on
                session = self._session = self.location.open_session(serve_reads=self._serve_reads, lazy=True)
                target: WriteTarget | Callable[[], WriteTarget] = self._open_target
            else:
                session = self._open_session()
                if self.started_at is None and (resume_from is not None or not new_run):
                    # read first: this run may be stored already
                    recorded, checkpoint = self._recorded_run(session, resume_from)
                target = self._target = session.target(self.run_id)
            self._writer = QuadWriter(target, convert=self._convert, max_buffered=self._max_buffered)
            # A new writer: what the last one believed it wrote may not have reached the store (its
            # failed writes are dropped with it), so summaries are replaced whole once more.
            self._stored_summaries = None
            if self.started_at is not None:
                return
        self.started_at = start_time or time.time()
        self.status = RUNNING
        env = environment or current_environment()
        if recorded is not None:
            self._continue(recorded, env, checkpoint)
            return
        run, bundle = self.run, self.bundle
        add = self._add
        for cls in (PROV.Activity, MLS.Run, CNNPROV.TrainingRun):
            add(run, RDF.type, cls)
        add(run, RDFS.label, string_literal(self.name))
        add(run, CNNPROV.runId, string_literal(self.run_id))
        add(run, PROV.startedAtTime, datetime_literal(self.started_at))
        add(run, CNNPROV.status, string_literal(RUNNING))
        add(run, CNNPROV.hostname, string_literal(env.hostname))
        add(run, CNNPROV.processId, integer_literal(env.process_id))
        if env.random_seed is not None:
            add(run, CNNPROV.randomSeed, integer_literal(env.random_seed))
        if env.git_commit:
            add(run, CNNPROV.gitCommit, string_literal(env.git_commit))
        for cls in (PROV.Entity, PROV.Bundle, CNNPROV.RunBundle):
            add(bundle, RDF.type, cls)
        add(bundle, CNNPROV.describesRun, run)
        self._record_agents(env)
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

    def _record_agents(self, env: RunEnvironment) -> None:
        add, run, bundle = self._add, self.run, self.bundle
        user = iri(self.base, "agent", "person", iri_segment(env.user))
        self._agent(user, PROV.Person, env.user)
        for software, version in env.software.items():
            agent = iri(self.base, "agent", "software", iri_segment(software), iri_segment(version))
            self._agent(agent, PROV.SoftwareAgent, software)
            for triple in prov_forms.association(self.run, agent):
                add(*triple)
            add(agent, CNNPROV.softwareVersion, string_literal(version))
            if software == "cnnprov":
                add(bundle, PROV.wasAttributedTo, agent)
        association = self._user_association
        add(run, PROV.qualifiedAssociation, association)
        add(association, RDF.type, PROV.Association)
        add(association, PROV.agent, user)

    def _recorded_run(
        self, session: Session, resume_from: str | os.PathLike[str] | None
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
                recorded = read_run(store, run, bundle)
                if recorded is not None:
                    self.run, self.bundle, self.run_id = run, bundle, recorded.run_id
                    self.name = recorded.name or self.name
                    return recorded, checkpoint
        return read_run(store, self.run, self.bundle), None

    def _continue(self, recorded: RecordedRun, env: RunEnvironment, checkpoint: NamedNode | None) -> None:
        """Pick up a stored run: its numbering, its open status, and a new attempt."""
        self.started_at = recorded.started_at or self.started_at
        self._epochs.update(recorded.epochs)
        self._checkpoint_count = recorded.checkpoints
        self._checkpoint = checkpoint or recorded.latest_checkpoint
        self._metric_count = recorded.values
        self._summaries.update(recorded.summaries)
        self._epoch_statistics = EpochStatistics(len(recorded.epochs), recorded.epoch_seconds)
        self._adaptations = recorded.adaptations
        self._optimizers.update(recorded.optimizers)
        self._lr_settings.update(recorded.learning_rates)
        run, graph, writer = self.run, self.bundle, self._writer
        writer.append(Replace(run, CNNPROV.status, graph, (string_literal(RUNNING),)))
        for predicate in (PROV.endedAtTime, CNNPROV.durationSeconds, CNNPROV.errorType, CNNPROV.errorMessage):
            writer.append(Replace(run, predicate, graph))
        writer.append(Replace(run, CNNPROV.hostname, graph, (string_literal(env.hostname),)))
        writer.append(Replace(run, CNNPROV.processId, graph, (integer_literal(env.process_id),)))
        self._record_agents(env)
        previous = child(run, "attempt", str(recorded.attempts)) if recorded.attempts else None
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
        attempt = self._attempt = child(self.run, "attempt", str(index))
        add = self._add
        add(attempt, RDF.type, PROV.Activity)
        add(attempt, RDF.type, CNNPROV.Attempt)
        add(attempt, CNNPROV.attemptIndex, integer_literal(index))
        add(attempt, CNNPROV.partOfRun, self.run)
        add(attempt, PROV.startedAtTime, datetime_literal(started))
        add(attempt, CNNPROV.status, string_literal(RUNNING))
        add(attempt, CNNPROV.hostname, string_literal(env.hostname))
        add(attempt, CNNPROV.processId, integer_literal(env.process_id))
        if previous is not None:
            add(attempt, PROV.wasInformedBy, previous)
        if checkpoint is not None:
            add(attempt, PROV.used, checkpoint)

    def _input_checkpoint(self, path: str | os.PathLike) -> NamedNode | None:
        """A checkpoint file the run starts from that no stored run wrote."""
        file = Path(path)
        if not file.is_file():
            return None
        node = self._checkpoint = child(self.run, "checkpoint", "input")
        add = self._add
        for cls in (PROV.Entity, MLS.Model, CNNPROV.Checkpoint):
            add(node, RDF.type, cls)
        add(node, CNNPROV.filePath, string_literal(str(file.resolve())))
        add(node, CNNPROV.fileSizeBytes, integer_literal(file.stat().st_size))
        add(node, CNNPROV.sha256, string_literal(file_sha256(file)))
        return node

    @property
    def last_epoch(self) -> int | None:
        """The highest epoch index recorded for this run so far (stored ones included)."""
        return max(self._epochs, default=None)

    @property
    def _user_association(self) -> NamedNode:
        return child(self.run, "association", "user")

    def log_plan(self, plan: str) -> None:
        """Record the code the run executed (e.g. the LightningModule class) as its plan."""
        plan_node = iri(self.base, "plan", iri_segment(plan))
        add = self._add
        for cls in (PROV.Entity, PROV.Plan, MLS.Implementation, CNNPROV.LightningModuleClass):
            add(plan_node, RDF.type, cls)
        add(plan_node, RDFS.label, string_literal(plan.rsplit(".", 1)[-1]))
        add(plan_node, CNNPROV.pythonClass, string_literal(plan))
        add(self._user_association, PROV.hadPlan, plan_node)
        add(self.run, MLS.executes, plan_node)

    def _agent(self, agent: NamedNode, kind: NamedNode, label: str) -> None:
        self._add(agent, RDF.type, PROV.Agent)
        self._add(agent, RDF.type, kind)
        self._add(agent, RDFS.label, string_literal(label))
        self._add(self.run, PROV.wasAssociatedWith, agent)

    def finish(self, status: str = SUCCESS, error: BaseException | None = None) -> None:
        """Record the end of the run (or of its latest stage) and store everything buffered.

        Safe to call more than once: a later call (``fit`` then ``test``) moves
        the end time and status forward. Keeps the store open for further stages;
        :meth:`close` releases it.
        """
        if self._writer is None:
            return
        ended = time.time()
        current = self._current_epoch
        if current is not None and current in self._epochs and current not in self._ended_epochs:
            self.epoch_ended(current, ended)  # the stage stopped inside this epoch
        self._current_epoch = None
        if self.status == FAILED and status != FAILED:
            status = FAILED  # a later clean stage does not undo a failure
        self.status = status
        run, graph = self.run, self.bundle
        self._writer.append(Replace(run, CNNPROV.status, graph, (string_literal(status),)))
        self._writer.append(Replace(run, PROV.endedAtTime, graph, (datetime_literal(ended),)))
        self._writer.append(
            Replace(run, CNNPROV.durationSeconds, graph, (double_literal(ended - (self.started_at or ended)),))
        )
        attempt = self._attempt
        if attempt is not None:
            self._writer.append(Replace(attempt, CNNPROV.status, graph, (string_literal(status),)))
            self._writer.append(Replace(attempt, PROV.endedAtTime, graph, (datetime_literal(ended),)))
        if error is not None:
            error_type, message = string_literal(type(error).__qualname__), string_literal(_error_text(error))
            for node in (run, attempt) if attempt is not None else (run,):
                self._writer.append(Replace(node, CNNPROV.errorType, graph, (error_type,)))
                self._writer.append(Replace(node, CNNPROV.errorMessage, graph, (message,)))
        if self._checkpoint is not None and self._checkpoint_count:  # not a checkpoint it only started from
            self._add(run, MLS.hasOutput, self._checkpoint)
        self._summaries_due()  # values of a test stage, or of an epoch cut short
        self.flush()

    def close(self) -> None:
        """Store everything buffered and release the store (a shared session stays open). Safe to call twice."""
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
                session.close()  # memory tables to disk and the store let go of, in the background

    def flush(self, wait: bool = True) -> None:
        """Hand buffered records to the writer; with ``wait``, return once they are durable."""
        if self._writer is not None:
            self._writer.flush(wait=wait)

    # -- what the run used -------------------------------------------------
    def log_hyperparameters(self, params: Any, source: str | None = None) -> None:
        """Record hyperparameters (nested ones flattened to dotted paths) as ML Schema settings."""
        texts = self._hyperparameter_texts
        for path, value in flatten_hyperparameters(params):
            self._setting(self.run, path, value, path)
            term = literal(scalar(value))
            texts[path] = "None" if isinstance(term, NamedNode) else term.value
        if texts and self._writer is not None:
            # one literal to list runs by (best-runs): reading every setting of a thousand runs is slow
            listing = ", ".join(f"{name}={text}" for name, text in sorted(texts.items()))
            self._writer.append(Replace(self.run, CNNPROV.hyperparameterList, self.bundle, (string_literal(listing),)))

    def _setting(self, owner: NamedNode, key: str, value: Any, hyperparameter: str) -> NamedNode:
        setting = child(owner, "setting", key)
        parameter = iri(self.base, "hyperparameter", iri_segment(hyperparameter))
        add = self._add
        add(setting, RDF.type, PROV.Entity)
        add(setting, RDF.type, MLS.HyperParameterSetting)
        add(setting, MLS.specifiedBy, parameter)
        add(setting, MLS.hasValue, literal(scalar(value)))
        if owner != self.run:
            add(setting, CNNPROV.settingOf, owner)
        add(parameter, RDF.type, PROV.Entity)
        add(parameter, RDF.type, MLS.HyperParameter)
        add(parameter, RDFS.label, string_literal(hyperparameter))
        add(self.run, PROV.used, setting)
        add(self.run, MLS.hasInput, setting)
        return setting

    def log_architecture(self, model: Any) -> None:
        """Record a torch model's leaf layers, in order, with their own hyperparameters."""
        add = self._add
        architecture = child(self.run, "architecture")
        for cls in (PROV.Entity, PROV.Collection, CNNPROV.Architecture):
            add(architecture, RDF.type, cls)
        model_class = type(model)
        add(architecture, CNNPROV.pythonClass, string_literal(f"{model_class.__module__}.{model_class.__qualname__}"))
        total, trainable = count_parameters(model)
        add(architecture, CNNPROV.parameterCount, integer_literal(total))
        add(architecture, CNNPROV.trainableParameterCount, integer_literal(trainable))
        add(self.run, PROV.used, architecture)
        for layer in describe_model(model):
            node = child(self.run, "layer", str(layer.index))
            for cls in (PROV.Entity, CNNPROV.Layer, getattr(CNNPROV, layer.kind)):
                add(node, RDF.type, cls)
            add(architecture, PROV.hadMember, node)
            add(node, CNNPROV.layerIndex, integer_literal(layer.index))
            add(node, CNNPROV.layerName, string_literal(layer.name))
            add(node, CNNPROV.pythonClass, string_literal(layer.python_class))
            add(node, CNNPROV.parameterCount, integer_literal(layer.parameter_count))
            add(node, CNNPROV.trainableParameterCount, integer_literal(layer.trainable_parameter_count))
            for prop, value in layer.settings.items():
                add(node, getattr(CNNPROV, prop), literal(value))

    def log_optimizer(self, index: int, optimizer: Any) -> NamedNode:
        """Record an optimizer's class and every param-group setting (``params`` aside)."""
        if index in self._optimizers:  # a later stage or attempt: recorded already, lr changes are tracked
            return self._optimizers[index]
        node = child(self.run, "optimizer", str(index))
        self._optimizers[index] = node
        add = self._add
        for cls in (PROV.Entity, PROV.Collection, CNNPROV.Optimizer):
            add(node, RDF.type, cls)
        add(node, CNNPROV.pythonClass, string_literal(_class_path(optimizer)))
        add(self.run, PROV.used, node)
        for group_index, group in enumerate(optimizer.param_groups):
            group_node = child(node, "group", str(group_index))
            add(group_node, RDF.type, PROV.Entity)
            add(group_node, RDF.type, CNNPROV.ParameterGroup)
            add(group_node, CNNPROV.parameterGroupIndex, integer_literal(group_index))
            add(node, PROV.hadMember, group_node)
            for key, value in group.items():
                if key == "params":
                    continue
                setting = self._setting(group_node, key, value, f"optimizer.{key}")
                if key == "lr":
                    self._lr_settings[(index, group_index)] = (setting, value)
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
        node = child(self.run, "scheduler", str(index))
        add = self._add
        add(node, RDF.type, PROV.Entity)
        add(node, RDF.type, CNNPROV.LearningRateScheduler)
        add(node, CNNPROV.pythonClass, string_literal(_class_path(scheduler)))
        if interval:
            add(node, CNNPROV.schedulerInterval, string_literal(interval))
        if frequency is not None:
            add(node, CNNPROV.schedulerFrequency, integer_literal(frequency))
        if optimizer_index in self._optimizers:
            add(node, CNNPROV.adjusts, self._optimizers[optimizer_index])
        add(self.run, PROV.used, node)
        state = scheduler.state_dict() if hasattr(scheduler, "state_dict") else {}
        for key, value in state.items():
            if key.startswith("_") or key in ("last_epoch", "_last_lr", "base_lrs", "optimizer"):
                continue
            if callable(value) or isinstance(value, (dict, list)) and len(value) > 64:
                continue
            self._setting(node, key, value, f"scheduler.{key}")

    def learning_rate_changed(
        self, optimizer_index: int, group_index: int, new_lr: float, epoch: int | None, step: int | None
    ) -> None:
        """Record a learning-rate change as a new setting derived from the previous one."""
        previous = self._lr_settings.get((optimizer_index, group_index))
        if previous is None or previous[1] == new_lr:
            return
        self._adaptations += 1
        now = time.time()
        at = datetime_literal(now)
        add = self._add
        adaptation = child(self.run, "adaptation", str(self._adaptations))
        add(adaptation, RDF.type, PROV.Activity)
        add(adaptation, RDF.type, CNNPROV.LearningRateAdaptation)
        add(adaptation, CNNPROV.partOfRun, self.run)
        add(adaptation, PROV.startedAtTime, at)
        add(adaptation, PROV.endedAtTime, at)
        add(adaptation, PROV.used, previous[0])
        group = child(self._optimizers[optimizer_index], "group", str(group_index))
        setting = child(group, "setting", "lr", str(self._adaptations))
        for cls in (PROV.Entity, MLS.HyperParameterSetting):
            add(setting, RDF.type, cls)
        add(setting, MLS.specifiedBy, iri(self.base, "hyperparameter", "optimizer.lr"))
        add(setting, MLS.hasValue, literal(float(new_lr)))
        add(setting, CNNPROV.settingOf, group)
        add(setting, PROV.wasDerivedFrom, previous[0])
        add(setting, PROV.wasGeneratedBy, adaptation)
        add(setting, PROV.generatedAtTime, at)
        add(self.run, PROV.used, setting)
        for node in (adaptation, setting):
            if epoch is not None:
                add(node, CNNPROV.atEpoch, integer_literal(epoch))
            if step is not None:
                add(node, CNNPROV.atStep, integer_literal(step))
        self._lr_settings[(optimizer_index, group_index)] = (setting, new_lr)

    def log_dataset(
        self,
        role: str,
        dataset_class: str | None = None,
        sample_count: int | None = None,
        batch_size: int | None = None,
        batch_count: int | None = None,
    ) -> None:
        """Record the data a stage used (role: train, validation, test or predict)."""
        node = child(self.run, "data", role)
        add = self._add
        add(node, RDF.type, PROV.Entity)
        add(node, RDF.type, MLS.Dataset)
        add(node, CNNPROV.dataRole, string_literal(role))
        if dataset_class:
            add(node, CNNPROV.pythonClass, string_literal(dataset_class))
            add(node, RDFS.label, string_literal(dataset_class.rsplit(".", 1)[-1]))
        for prop, value in (
            (CNNPROV.sampleCount, sample_count),
            (CNNPROV.batchSize, batch_size),
            (CNNPROV.batchCount, batch_count),
        ):
            if value is not None:
                add(node, prop, integer_literal(value))
        add(self.run, PROV.used, node)
        add(self.run, MLS.hasInput, node)

    # -- what happens during training ----------------------------------------
    def epoch_started(self, index: int, when: float | None = None) -> None:
        """An epoch began. Everything recorded before it is durable when this returns.

        Before the first epoch that this process trains of a run there is no epoch to make
        durable, and a new run's store may still be opening: then this returns at once, unless
        opening failed or another live process holds the store (the error is raised here, before
        any step trains). The run's summaries (its epoch counts and times, each measure's values
        so far) are rewritten from here, on the writer thread while the epoch trains, and at
        :meth:`finish`.
        """
        if self._ended_epochs or self._writer is None:
            self.flush(wait=True)
        else:
            self._check_opening()
        self._ended_epochs.discard(index)
        if index in self._epochs:
            # Recorded already: a resumed attempt re-enters it. It stays one activity with its first start.
            self._current_epoch = index
            self._reopened_epochs.add(index)
            return
        when = when or time.time()
        self._epochs[index] = when
        self._current_epoch = index
        epoch = child(self.run, "epoch", str(index))
        add = self._add
        add(epoch, RDF.type, PROV.Activity)
        add(epoch, RDF.type, CNNPROV.Epoch)
        add(epoch, CNNPROV.epochIndex, integer_literal(index))
        add(epoch, CNNPROV.partOfRun, self.run)
        add(epoch, PROV.startedAtTime, datetime_literal(when))
        if index - 1 in self._epochs:
            add(epoch, PROV.wasInformedBy, child(self.run, "epoch", str(index - 1)))
        self._epoch_statistics.started = len(self._epochs)
        # Summaries (of the epoch that ended, and this one's start) are rewritten now, while the
        # epoch trains: they are derived data, and their update (~1.5 ms) stays out of the wait above.
        self._summaries_due()
        self.flush(wait=False)

    def _check_opening(self) -> None:
        """Raise now if the store could not be opened, or cannot be: another live process holds it."""
        writer = self._writer
        if writer is not None and (not writer.opening or self.location.held_by_another_process()):
            writer.wait_open()

    def epoch_ended(self, index: int, when: float | None = None) -> None:
        """An epoch ended; its records start on their way to the store without waiting."""
        started = self._epochs.get(index)
        if started is None:
            return
        when = when or time.time()
        epoch = child(self.run, "epoch", str(index))
        if index in self._reopened_epochs and self._writer is not None:  # it may have ended once already
            self._writer.append(Replace(epoch, PROV.endedAtTime, self.bundle, (datetime_literal(when),)))
            self._writer.append(Replace(epoch, CNNPROV.durationSeconds, self.bundle, (double_literal(when - started),)))
        else:
            self._add(epoch, PROV.endedAtTime, datetime_literal(when))
            self._add(epoch, CNNPROV.durationSeconds, double_literal(when - started))
        self._ended_epochs.add(index)
        self._epoch_statistics.ended(index, when - started)
        self.flush(wait=False)

    def _summaries_due(self) -> None:
        if self._writer is not None:
            self._writer.append(_SummariesDue((self._epoch_statistics.snapshot(),)))

    def stage_ended(self) -> None:
        """Training stopped: later metrics (test, validate) belong to the run, not an epoch."""
        self._current_epoch = None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer metric values (the hot path: one tuple append).

        An ``epoch`` key, as Lightning adds, gives the values' epoch and is not
        itself stored as a metric.
        """
        writer = self._writer
        if writer is not None:
            now = time.time()
            # stamped: the writer thread gets the values within ms and stores them while training goes on
            writer.append(_MetricRow((metrics, step, now, self._current_epoch)), now)

    def log_checkpoint(
        self,
        path: str | os.PathLike,
        epoch: int | None = None,
        step: int | None = None,
        monitor: str | None = None,
        score: float | None = None,
    ) -> NamedNode:
        """Record a checkpoint file: size, sha256, score, the epoch that wrote it, and its predecessor."""
        file = Path(path)
        self._checkpoint_count += 1
        node = child(self.run, "checkpoint", str(self._checkpoint_count))
        add = self._add
        for cls in (PROV.Entity, MLS.Model, CNNPROV.Checkpoint):
            add(node, RDF.type, cls)
        add(node, CNNPROV.filePath, string_literal(str(file.resolve())))
        add(node, PROV.generatedAtTime, datetime_literal(time.time()))
        if file.is_file():
            add(node, CNNPROV.fileSizeBytes, integer_literal(file.stat().st_size))
            if self._writer is not None:  # hashed on the writer thread, before the next epoch starts
                self._writer.append(_FileDigest((node, str(file), self.bundle)))
        if monitor:
            add(node, CNNPROV.monitoredMetric, string_literal(monitor))
        if score is not None:
            add(node, CNNPROV.monitoredScore, double_literal(score))
        if epoch is not None:
            add(node, CNNPROV.atEpoch, integer_literal(epoch))
        if step is not None:
            add(node, CNNPROV.atStep, integer_literal(step))
        generator = child(self.run, "epoch", str(epoch)) if epoch in self._epochs else self.run
        add(node, PROV.wasGeneratedBy, generator)
        if self._checkpoint is not None:
            add(node, PROV.wasDerivedFrom, self._checkpoint)
        self._checkpoint = node
        return node

    # -- quads -------------------------------------------------------------
    def _add(self, subject: NamedNode, predicate: NamedNode, obj: Any) -> None:
        """Buffer one triple of the run's graph; usage and generation get their qualified form too."""
        writer = self._writer
        if writer is not None:
            bundle = self.bundle
            for triple in prov_forms.with_qualified_form(subject, predicate, obj):
                writer.append(Quad(*triple, bundle))

    def _convert(self, item: Any) -> list[Quad]:
        """Writer thread: a buffered item that is not yet quads → quads."""
        if isinstance(item, _FileDigest):
            return item.quads()
        if isinstance(item, _SummariesDue):
            return self._summary_update(item[0])
        return self._metric_quads(item)

    def _summary_update(self, epoch_statistics: tuple) -> Update | list:
        """Writer thread: one update for the run's epoch statistics and the summaries that changed."""
        stored = self._stored_summaries
        if stored is None:  # the first update of this writer (start() resets it, after a resume too)
            stored = self._stored_summaries = StoredSummaries(self.run, self.bundle)
        changed = self._changed_summaries
        terms = self._terms()
        measures = {name: terms.measure(name) for name in changed}
        sparql = stored.update(self._summaries, measures, changed, epoch_statistics)
        changed.clear()
        return Update(sparql) if sparql else []

    def _terms(self) -> _MetricTerms:
        terms = self.__dict__.get("_metric_terms")
        if terms is None or terms.run != self.run:  # first value, or a resumed run took another IRI
            terms = self._metric_terms = _MetricTerms(self.run, self.bundle, self.base)
        return terms

    def _metric_quads(self, row: Any) -> list[Quad]:
        """Writer thread: one buffered ``log_metrics`` call → quads.

        Each value: its two types, measure, value, time, generating activity,
        step and epoch, and the generation's qualified form (activity and time).
        The nodes every value repeats are made once per run (building terms is
        most of the Python work here, and it holds the GIL).
        """
        metrics, step, when, generating_epoch = row
        terms = self._terms()
        graph = self.bundle
        at = datetime_literal(when)
        generator = terms.generator(generating_epoch)
        at_step = integer_literal(step) if step is not None else None
        epoch_value = metrics.get("epoch")
        epoch_number = int(epoch_value) if epoch_value is not None else None
        at_epoch = integer_literal(epoch_number) if epoch_value is not None else None
        summaries, changed = self._summaries, self._changed_summaries
        entity, evaluation, rdf_type = PROV.Entity, MLS.ModelEvaluation, RDF.type
        quads = []
        for name, value in metrics.items():
            if name == "epoch":
                continue
            number = _as_float(value)
            if number is None:
                continue
            name = str(name)
            measure = terms.measure(name)
            if name not in self._measures:  # described once in the run's graph
                self._measures.add(name)
                quads.append(Quad(measure, rdf_type, entity, graph))
                quads.append(Quad(measure, rdf_type, MLS.EvaluationMeasure, graph))
                quads.append(Quad(measure, RDFS.label, string_literal(name), graph))
            summary = summaries.get(name)
            if summary is None:
                summary = summaries[name] = RunningSummary()
            summary.add(number, epoch_number)
            changed.add(name)
            self._metric_count += 1
            node = NamedNode(f"{terms.value_prefix}{self._metric_count}")
            quads += (
                Quad(node, rdf_type, entity, graph),
                Quad(node, rdf_type, evaluation, graph),
                Quad(node, MLS.specifiedBy, measure, graph),
                Quad(node, MLS.hasValue, double_literal(number), graph),
                Quad(node, PROV.generatedAtTime, at, graph),
                Quad(node, PROV.wasGeneratedBy, generator, graph),
            )
            if at_step is not None:
                quads.append(Quad(node, CNNPROV.atStep, at_step, graph))
            if at_epoch is not None:
                quads.append(Quad(node, CNNPROV.atEpoch, at_epoch, graph))
            # the generation's qualified form too (see prov_forms): activity and time
            qualified = prov_forms.generation(node, generator)
            quads += (Quad(*triple, graph) for triple in qualified)
            quads.append(Quad(qualified[0][2], PROV.atTime, at, graph))
        return quads


def _as_float(value: Any) -> float | None:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None


def _error_text(error: BaseException) -> str:
    """An exception's message; its repr when the message is empty (``KeyboardInterrupt()``)."""
    try:
        return str(error) or repr(error)
    except Exception:  # a broken __str__ must not hide the failure
        return type(error).__qualname__


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
