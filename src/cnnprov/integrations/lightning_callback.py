"""The callback :class:`~cnnprov.integrations.lightning.ProvLogger` attaches to its Trainer:
epoch boundaries, data and the learning rates of every optimizer step, which a Logger is not told of."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from cnnprov.capture.data import describe_loader
from cnnprov.capture.hyperparameters import class_path
from cnnprov.capture.recorder import RunRecorder
from cnnprov.errors import StoreWriteError

#: The key of the entry ProvCallback adds to every checkpoint Lightning writes.
CHECKPOINT_KEY = "cnnprov"

if TYPE_CHECKING:
    from cnnprov.integrations.lightning import ProvLogger


class ProvCallback(Callback):
    """Epoch boundaries, data and learning-rate changes, attached by :class:`ProvLogger` itself."""

    def __init__(self, logger: ProvLogger) -> None:
        self.logger = logger
        self._optimizer_indices: dict[int, int] = {}  # id(optimizer) → its index in trainer.optimizers
        self._epoch: int | None = None  # the trainer epoch last reported to the recorder
        # The epoch started and not yet ended. It ends when the next one starts or training
        # ends: Lightning logs epoch-level metrics and ModelCheckpoint saves after
        # on_train_epoch_end, and what an epoch generates must fall within it (PROV-CONSTRAINTS).
        self._open_epoch: int | None = None
        self._trace_step = False  # the next training step is the fit's first: the architecture is read from it
        self._tracing = False

    @property
    def open_epoch(self) -> int | None:
        """The epoch started and not yet ended (Lightning's index)."""
        return self._open_epoch

    def _recorder(self) -> RunRecorder | None:
        recorder = self.logger._recorder
        return recorder if recorder is not None and recorder.started else None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is None:
            return
        _log_data_setup(recorder, trainer)
        _log_loaders(recorder, "train", [trainer.train_dataloader], [trainer.num_training_batches])
        _log_loaders(recorder, "validation", _as_list(trainer.val_dataloaders), trainer.num_val_batches)
        # Recorded now, not in log_graph: Lightning restores a checkpoint's optimizer and scheduler
        # state after log_graph, and the rates recorded must be those training starts from.
        log_optimizers(recorder, trainer)
        self._optimizer_indices = {id(optimizer): i for i, optimizer in enumerate(trainer.optimizers)}
        self._epoch = None
        self._open_epoch = None
        #: the epoch's batches and its validation are over (a checkpoint now is the epoch's last)
        self.epoch_finishing = False
        self._trace_step = True
        # an IterableDataset has no length: its batch count is what the first epoch took from it
        self._count_batches = math.isinf(trainer.num_training_batches)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is None:
            return
        recorder.in_steps = False  # a validation inside a training epoch: its epoch-level values are no step's
        if not trainer.training and trainer.state.fn == "validate":
            _log_data_setup(recorder, trainer)
            _log_loaders(recorder, "validation", _as_list(trainer.val_dataloaders), trainer.num_val_batches)

    # Which values are step-level: Lightning logs a step's values after its batch-end hooks and an
    # epoch's (training or evaluation) after its epoch-end hooks, so values logged between a batch's
    # start and the epoch's end are a step's (stored as series), the others an epoch's.
    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._steps(True)

    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._steps(True)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._steps(False)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # before ModelCheckpoint's own on_validation_end (Lightning runs checkpoint callbacks last)
        self.epoch_finishing = epoch_is_ending(trainer)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._steps(False)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._steps(False)
        self.epoch_finishing = True
        recorder = self._recorder()
        if self._count_batches and recorder is not None:
            self._count_batches = False
            batches = trainer.fit_loop.epoch_loop.batch_progress.current.completed
            recorder.data_seen("train", batch_count=batches)

    def _steps(self, inside: bool) -> None:
        recorder = self._recorder()
        if recorder is not None:
            recorder.in_steps = inside

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is not None:
            _log_data_setup(recorder, trainer)
            _log_loaders(recorder, "test", _as_list(trainer.test_dataloaders), trainer.num_test_batches)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is not None:
            _log_data_setup(recorder, trainer)
            _log_loaders(recorder, "predict", _as_list(trainer.predict_dataloaders), trainer.num_predict_batches)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._enter_epoch(trainer)

    def _enter_epoch(self, trainer: Trainer) -> None:
        self._epoch = trainer.current_epoch
        self.epoch_finishing = False
        recorder = self._recorder()
        if recorder is None:
            return
        self.logger.record_saved_checkpoints()  # saved by hand in the epoch that ends now
        self._end_open_epoch(recorder)
        self._open_epoch = trainer.current_epoch
        try:
            recorder.epoch_started(trainer.current_epoch)
        except StoreWriteError as error:  # never stop training over a failed write: it is kept and retried
            rank_zero_warn(str(error))

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._epoch != trainer.current_epoch:
            # resumed from a mid-epoch checkpoint: Lightning goes on without on_train_epoch_start
            self._enter_epoch(trainer)
        self.epoch_finishing = False  # training again after a validation inside the epoch
        recorder = self._recorder()
        if recorder is not None:
            recorder.step_started()
        self._steps(True)
        io = self.logger._checkpoint_io
        if io is not None and io.saved:  # trainer.save_checkpoint(path) in the last step
            self.logger.record_saved_checkpoints()
        if self._trace_step:
            self._trace_step = False
            recorder = self._recorder()
            if recorder is not None:
                recorder.architecture_step_started(pl_module)
                self._tracing = True

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        recorder = self._recorder()
        if recorder is not None:
            recorder.step_ended()
        if self._tracing:  # the first step of the fit: its trace is the architecture's record
            self._tracing = False
            recorder = self._recorder()
            if recorder is not None:
                recorder.architecture_step_ended()

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        """The rates this optimizer step uses, however they were set: Lightning calls this inside the
        step, after the closure (``training_step``, an ``optimizer_step`` override's changes) and
        before torch updates the parameters, in automatic and manual optimization alike."""
        recorder = self.logger._recorder
        if recorder is None:
            return
        index = self._optimizer_indices.get(id(optimizer))
        if index is None:  # optimizers replaced since training started
            self._optimizer_indices = {id(opt): i for i, opt in enumerate(trainer.optimizers)}
            index = self._optimizer_indices.get(id(optimizer))
            if index is None:
                return
        recorder.learning_rates_used(index, optimizer.param_groups, trainer.global_step)

    def _end_open_epoch(self, recorder: RunRecorder) -> None:
        """End the epoch in progress: after everything Lightning logged and saved for it."""
        if self._open_epoch is not None:
            recorder.epoch_ended(self._open_epoch)
            self._open_epoch = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is not None:
            self.logger.record_saved_checkpoints()
            self._end_open_epoch(recorder)  # the last epoch's metrics and checkpoints are in by now
            recorder.in_steps = False
            recorder.stage_ended()

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Name the run and attempt in the checkpoint itself: a resume finds its run even when the
        process was killed after the file was written and before its hash was recorded."""
        recorder = self._recorder()
        if recorder is not None:
            checkpoint[CHECKPOINT_KEY] = {"run_id": recorder.run_id, "attempt": recorder.attempt, "base": recorder.base}

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.logger._error = exception


def epoch_is_ending(trainer: Trainer) -> bool:
    """Whether the training epoch has fetched its last batch (a checkpoint now is the epoch's last)."""
    try:
        return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
    except AttributeError:  # not fitting, or a Lightning without these loops: be safe and wait
        return False


def log_optimizers(recorder: RunRecorder, trainer: Trainer) -> None:
    """Record the Trainer's optimizers and learning-rate schedulers as they stand now."""
    for index, optimizer in enumerate(trainer.optimizers):
        recorder.log_optimizer(index, optimizer)
    for index, config in enumerate(trainer.lr_scheduler_configs):
        optimizer_index = next((i for i, opt in enumerate(trainer.optimizers) if opt is config.scheduler.optimizer), 0)
        recorder.log_scheduler(
            index, config.scheduler, optimizer_index, interval=config.interval, frequency=config.frequency
        )


def _log_data_setup(recorder: RunRecorder, trainer: Trainer) -> None:
    """The DataModule's setup (and prepare_data) ran for this stage: its data is recorded next."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        stage = trainer.state.fn.value if trainer.state.fn is not None else "fit"
        prepares = type(datamodule).prepare_data is not LightningDataModule.prepare_data
        recorder.log_data_preparation(class_path(datamodule), str(stage), prepares)


def _log_loaders(recorder: RunRecorder, role: str, loaders: Iterable[Any], batch_counts: Any = ()) -> None:
    """Record each loader's data; ``batch_counts`` are the batches the stage takes from each (after limits)."""
    loaders = [loader for loader in loaders if loader is not None]
    counts = list(batch_counts) if isinstance(batch_counts, (list, tuple)) else [batch_counts]
    for index, loader in enumerate(loaders):
        data = describe_loader(loader, counts[index] if index < len(counts) else None)
        recorder.log_dataset(
            role if len(loaders) == 1 else f"{role}-{index}",
            dataset_class=data.dataset_class,
            sample_count=data.sample_count,
            batch_size=data.batch_size,
            batch_count=data.batch_count,
        )
        if getattr(loader, "dataset", None) is not None:
            recorder.log_data_lineage(role if len(loaders) == 1 else f"{role}-{index}", loader.dataset)


def _as_list(loaders: Any) -> list:
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
