"""PyTorch Lightning adapter: turns Trainer events into :class:`~cnnprov.recorder.RunRecorder` calls."""

from __future__ import annotations

import os
import uuid
import weakref
from argparse import Namespace
from collections.abc import Iterable
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from .recorder import FAILED, RunRecorder
from .vocab import DEFAULT_BASE


class ProvLogger(Logger):
    """Record every Lightning run as W3C PROV-O in an Oxigraph store.

    Passing it to ``Trainer(logger=...)`` is all it takes: it attaches the
    callback that records epochs and learning-rate changes itself. It records
    the run, its agents and environment, hyperparameters, the model's layers,
    optimizers and schedulers, the data, every epoch, every logged metric value
    and every checkpoint ``ModelCheckpoint`` writes.

    Args:
        store: directory of the embedded store (default ``$CNNPROV_STORE`` or
            ``./provenance``). Many runs share one store.
        run_name: a human name for the run (default: the start of its id).
        name: experiment name; checkpoints go to ``save_dir/name/version``.
        save_dir: root directory for checkpoints (default: the Trainer's
            ``default_root_dir``).
        base: namespace in which the run's IRIs are minted.

    Example::

        import lightning as L
        from cnnprov import ProvLogger

        trainer = L.Trainer(max_epochs=5, logger=ProvLogger(store="provenance"))
        trainer.fit(model, train_loader, val_loader)
    """

    def __init__(
        self,
        store: str | os.PathLike | None = None,
        run_name: str | None = None,
        name: str = "cnnprov_runs",
        save_dir: str | os.PathLike | None = None,
        base: str = DEFAULT_BASE,
    ) -> None:
        super().__init__()
        self._store = store
        self._run_name = run_name
        self._name = name
        self._save_dir = os.fspath(save_dir) if save_dir is not None else None
        self._base = base
        self._recorder: RunRecorder | None = None
        # Known before the store opens, so every rank and every checkpoint directory agree on it.
        self._run_id = str(uuid.uuid4())
        self._trainer_ref: weakref.ReferenceType | None = None
        self._error: BaseException | None = None
        self._seen_checkpoints: dict[str, tuple[int, int]] = {}

    # -- Logger properties -------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        """The run id (a UUID) that ``cnnprov runs`` lists and ``--run`` accepts."""
        return self._run_id

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def run_id(self) -> str:
        return self.version

    @property
    @rank_zero_experiment
    def experiment(self) -> RunRecorder:
        """The :class:`RunRecorder` of this run, started on first use (rank zero only)."""
        if self._recorder is None:
            self._recorder = RunRecorder(self._store, name=self._run_name, run_id=self._run_id, base=self._base)
        self._recorder.start()
        return self._recorder

    # -- Lightning events ----------------------------------------------------
    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self.experiment.log_hyperparameters(params)

    @rank_zero_only
    def log_graph(self, model: LightningModule, input_array: Any = None) -> None:
        """Lightning calls this at the start of each stage: record plan, layers, optimizers."""
        recorder = self.experiment
        cls = type(model)
        recorder.log_plan(f"{cls.__module__}.{cls.__qualname__}")
        recorder.log_architecture(model)
        trainer = _trainer_of(model)
        if trainer is None:
            return
        self._trainer_ref = weakref.ref(trainer)
        if not any(isinstance(cb, _ProvCallback) and cb.logger is self for cb in trainer.callbacks):
            trainer.callbacks.append(_ProvCallback(self))
        for index, optimizer in enumerate(trainer.optimizers):
            recorder.log_optimizer(index, optimizer)
        for index, config in enumerate(trainer.lr_scheduler_configs):
            optimizer_index = next(
                (i for i, opt in enumerate(trainer.optimizers) if opt is config.scheduler.optimizer), 0
            )
            recorder.log_scheduler(
                index, config.scheduler, optimizer_index, interval=config.interval, frequency=config.frequency
            )
        recorder.flush(wait=False)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        recorder = self._recorder
        if recorder is None or not recorder.started:
            recorder = self.experiment
        recorder.log_metrics(metrics, step)

    @rank_zero_only
    def save(self) -> None:
        """Nothing to do: Lightning calls this after every ``log_metrics``; writes happen at epoch ends."""

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        trainer = self._trainer_ref() if self._trainer_ref else None
        epoch = trainer.current_epoch if trainer is not None else None
        step = trainer.global_step if trainer is not None else None
        for path in self._new_checkpoint_files(checkpoint_callback):
            score = checkpoint_callback.best_k_models.get(path, checkpoint_callback.current_score)
            self.experiment.log_checkpoint(
                path,
                epoch=epoch,
                step=step,
                monitor=checkpoint_callback.monitor,
                score=float(score) if score is not None else None,
            )

    def _new_checkpoint_files(self, callback: ModelCheckpoint) -> list[str]:
        """Files the callback has written or rewritten since we last looked (public attributes only)."""
        candidates = list(callback.best_k_models) + [callback.last_model_path]
        fresh = []
        for path in dict.fromkeys(p for p in candidates if p):
            try:
                stat = os.stat(path)
            except OSError:
                continue
            signature = (stat.st_mtime_ns, stat.st_size)
            real = os.path.realpath(path)
            if self._seen_checkpoints.get(real) != signature:
                self._seen_checkpoints[real] = signature
                fresh.append(path)
        return fresh

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Record the end and status of the stage, store everything, release the store."""
        recorder = self._recorder
        if recorder is None or not recorder.started:
            return
        error, self._error = self._error, None
        try:
            recorder.finish(FAILED if error is not None else status, error=error)
        finally:
            recorder.close()

    # -- pickling (ddp_spawn, multiprocessing) --------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_recorder"] = None
        state["_trainer_ref"] = None
        return state


class _ProvCallback(Callback):
    """Epoch boundaries, data and learning-rate changes, attached by :class:`ProvLogger` itself."""

    def __init__(self, logger: ProvLogger) -> None:
        self.logger = logger
        self._watch_steps = False

    def _recorder(self) -> RunRecorder | None:
        recorder = self.logger._recorder
        return recorder if recorder is not None and recorder.started else None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is None:
            return
        _log_loaders(recorder, "train", [trainer.train_dataloader])
        _log_loaders(recorder, "validation", _as_list(trainer.val_dataloaders))
        self._watch_steps = any(config.interval == "step" for config in trainer.lr_scheduler_configs)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is not None and not trainer.training and trainer.state.fn == "validate":
            _log_loaders(recorder, "validation", _as_list(trainer.val_dataloaders))

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is not None:
            _log_loaders(recorder, "test", _as_list(trainer.test_dataloaders))

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is None:
            return
        _check_learning_rates(recorder, trainer)
        try:
            recorder.epoch_started(trainer.current_epoch)
        except OSError as error:  # never stop training over provenance
            rank_zero_warn(str(error))

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._watch_steps:
            recorder = self._recorder()
            if recorder is not None:
                _check_learning_rates(recorder, trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is not None:
            recorder.epoch_ended(trainer.current_epoch)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is not None:
            recorder.stage_ended()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.logger._error = exception


def _check_learning_rates(recorder: RunRecorder, trainer: Trainer) -> None:
    for opt_index, optimizer in enumerate(trainer.optimizers):
        for group_index, group in enumerate(optimizer.param_groups):
            recorder.learning_rate_changed(
                opt_index, group_index, group["lr"], trainer.current_epoch, trainer.global_step
            )


def _log_loaders(recorder: RunRecorder, role: str, loaders: Iterable[Any]) -> None:
    loaders = [loader for loader in loaders if loader is not None]
    for index, loader in enumerate(loaders):
        dataset = getattr(loader, "dataset", None)
        cls = type(dataset) if dataset is not None else None
        recorder.log_dataset(
            role if len(loaders) == 1 else f"{role}-{index}",
            dataset_class=f"{cls.__module__}.{cls.__qualname__}" if cls else None,
            sample_count=_length(dataset),
            batch_size=getattr(loader, "batch_size", None),
            batch_count=_length(loader),
        )


def _length(obj: Any) -> int | None:
    try:
        return len(obj)
    except Exception:  # iterable datasets have no length
        return None


def _as_list(loaders: Any) -> list:
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def _trainer_of(model: LightningModule) -> Trainer | None:
    try:
        return model.trainer
    except RuntimeError:
        return None
