"""Lightning Fabric adapter: a Fabric logger that records a hand-written loop as a run.

Fabric has no callbacks, so a loop says where its epochs begin and end; everything Fabric set
up (``_FabricModule``, ``_FabricOptimizer``, ``_FabricDataLoader``) is recorded as the object it
wraps, so layers, optimizer and data read as they do from a Lightning Trainer.
"""

from __future__ import annotations

import os
import uuid
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.fabric.loggers.logger import Logger, rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only, rank_zero_warn
from lightning.fabric.wrappers import is_wrapped

from cnnprov.capture.data import describe_loader
from cnnprov.capture.environment import current_environment, prefetch_environment
from cnnprov.capture.hyperparameters import class_path
from cnnprov.capture.recorder import FAILED, SUCCESS, RunRecorder
from cnnprov.errors import StoreWriteError
from cnnprov.rdf.vocab import DEFAULT_BASE
from cnnprov.storage.location import StoreLocation
from cnnprov.storage.protocols import Session


class ProvFabricLogger(Logger):
    """Record a Lightning Fabric training loop as W3C PROV-O, as :class:`~cnnprov.ProvLogger` does for a Trainer.

    Pass it to ``Fabric(loggers=...)``; ``fabric.log_dict`` and ``fabric.log`` record metric
    values. The loop tells it what Fabric does not: the model, optimizer and data it set up,
    and where each epoch starts and ends. Only global rank zero writes.

    Args:
        store: directory of the embedded store, URL of a SPARQL endpoint, a
            :class:`~cnnprov.StoreLocation`, or a session that many runs share (as for ProvLogger).
        run_name: a human name for the run (default: the start of its id).
        name: experiment name (Fabric's logger ``name``).
        version: the run's version (default: its id, a new UUID).
        root_dir: where files of the run go (default: the working directory).
        base: namespace in which the run's IRIs are minted.
        serve_reads: serve the store read-only to other processes while the run records.

    Example::

        logger = ProvFabricLogger(store="provenance", run_name="fabric")
        fabric = L.Fabric(accelerator="cpu", loggers=[logger])
        model, optimizer = fabric.setup(model, optimizer)
        loader = fabric.setup_dataloaders(loader)
        logger.log_hyperparams({"lr": 0.1})
        logger.log_graph(model)             # layers of the model Fabric wraps
        logger.log_optimizer(optimizer)     # class and settings of the optimizer it wraps
        logger.log_data("train", loader)
        with logger.recording():            # success, or failed with the error
            for epoch in range(3):
                with logger.epoch(epoch):
                    with logger.steps():        # step-level values: one series per epoch
                        for batch in loader:
                            ...
                            fabric.log_dict({"loss": loss.item()}, step=step)
                    fabric.log_dict({"val_acc": acc}, step=step)  # epoch-level
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | StoreLocation | Session | None = None,
        run_name: str | None = None,
        name: str = "cnnprov_runs",
        version: str | None = None,
        root_dir: str | os.PathLike[str] | None = None,
        base: str = DEFAULT_BASE,
        serve_reads: bool = True,
    ) -> None:
        super().__init__()
        self._store = store
        self._run_name = run_name
        self._name = name
        self._run_id = str(uuid.uuid4())
        self._version = version or self._run_id
        self._root_dir = os.path.abspath(os.fspath(root_dir) if root_dir is not None else os.getcwd())
        self._base = base
        self._serve_reads = serve_reads
        self._recorder: RunRecorder | None = None
        self._optimizers: list[torch.optim.Optimizer] = []
        self._epoch: int | None = None
        self._step: int | None = None
        # git, the installed packages and the machine are read in the background, not when the run starts
        self._environment = prefetch_environment(frameworks=("lightning",))

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def root_dir(self) -> str:
        return self._root_dir

    @property
    def log_dir(self) -> str:
        return os.path.join(self._root_dir, self._name, self._version)

    @property
    def run_id(self) -> str:
        """The id of the recorded run, as ``cnnprov runs`` lists it."""
        return self._run_id

    @property
    @rank_zero_experiment
    def experiment(self) -> RunRecorder:
        """The run's :class:`RunRecorder`, started on first use (rank zero only)."""
        if self._recorder is None:
            self._recorder = RunRecorder(
                self._store, name=self._run_name, run_id=self._run_id, base=self._base, serve_reads=self._serve_reads
            )
        if not self._recorder.started:
            environment = current_environment(self._environment, frameworks=("lightning",))  # Fabric is part of it
            self._recorder.start(environment, new_run=self._recorder.started_at is None)
        return self._recorder

    # -- what Fabric calls ---------------------------------------------------
    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        recorder = self.experiment
        if step is not None:
            self._step = step
        if self._optimizers:
            self._check_learning_rates(recorder)
        recorder.log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self.experiment.log_hyperparameters(params)

    @rank_zero_only
    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        """Record the model's class as the run's plan and its layers, unwrapped from Fabric's module."""
        model = unwrapped(model)
        recorder = self.experiment
        recorder.log_plan(class_path(model))
        recorder.log_architecture(model)

    @rank_zero_only
    def save(self) -> None:
        if self._recorder is not None and self._recorder.started:
            self._recorder.hand_over()

    @rank_zero_only
    def finalize(self, status: str, error: BaseException | None = None) -> None:
        """Record the run's end and status and let go of the store (Fabric's ``status`` words are kept)."""
        recorder = self._recorder
        if recorder is None or not recorder.started:
            return
        try:
            if self._epoch is not None:
                recorder.epoch_ended(self._epoch)
                self._epoch = None
            recorder.finish(FAILED if error is not None else status, error=error)
        finally:
            recorder.close(wait=True)

    # -- what the loop tells -------------------------------------------------
    @rank_zero_only
    def log_optimizer(self, optimizer: Any) -> None:
        """Record an optimizer (Fabric's wrapper unwrapped) and follow its learning rates."""
        optimizer = unwrapped(optimizer)
        self.experiment.log_optimizer(len(self._optimizers), optimizer)
        self._optimizers.append(optimizer)

    @rank_zero_only
    def log_data(self, role: str, loader: Any) -> None:
        """Record the data a loader (Fabric's or a plain DataLoader) serves, in ``role`` (train, validation…)."""
        data = describe_loader(loader)
        self.experiment.log_dataset(
            role,
            dataset_class=data.dataset_class,
            sample_count=data.sample_count,
            batch_size=data.batch_size,
            batch_count=data.batch_count,
        )

    @contextmanager
    def epoch(self, index: int) -> Iterator[None]:
        """The loop's epoch ``index``: started on entry, ended on exit (also when it raises)."""
        if getattr(rank_zero_only, "rank", 0) != 0:  # only rank zero records
            yield
            return
        recorder = self.experiment
        try:
            recorder.epoch_started(index)
        except StoreWriteError as error:  # never stop training over a failed write: it is kept and retried
            rank_zero_warn(str(error))
        self._epoch = index
        self._check_learning_rates(recorder)  # a scheduler stepped between epochs
        try:
            yield
        finally:
            if self._epoch == index:
                recorder.epoch_ended(index)
                self._epoch = None

    @contextmanager
    def steps(self) -> Iterator[None]:
        """The batches of an epoch: values logged inside are step-level, stored as one series per
        epoch and measure (as ProvLogger stores a Trainer's ``on_step`` values); outside, epoch-level."""
        recorder = self.experiment
        recorder.in_steps = True
        try:
            yield
        finally:
            recorder.in_steps = False

    @contextmanager
    def recording(self) -> Iterator[ProvFabricLogger]:
        """The whole run: finalized as ``success`` on exit, or ``failed`` with the error that ended it."""
        try:
            yield self
        except BaseException as error:
            self.finalize(FAILED, error=error)
            raise
        self.finalize(SUCCESS)

    def _check_learning_rates(self, recorder: RunRecorder) -> None:
        """The rates now in the optimizers' groups, from the last step logged on (a few comparisons)."""
        for opt_index, optimizer in enumerate(self._optimizers):
            recorder.learning_rates_used(opt_index, optimizer.param_groups, self._step or 0)


def unwrapped(obj: Any) -> Any:
    """The model or optimizer a Fabric wrapper holds (``obj`` itself when Fabric did not set it up)."""
    if not is_wrapped(obj):
        return obj
    if isinstance(obj, torch.nn.Module):
        return getattr(obj, "module", obj)
    return getattr(obj, "optimizer", obj)
