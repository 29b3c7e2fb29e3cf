"""The callback :class:`~cnnprov.integrations.lightning.ProvLogger` attaches to its Trainer:
epoch boundaries, data and the learning rates of every optimizer step, which a Logger is not told of."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from cnnprov.capture.recorder import RunRecorder
from cnnprov.errors import StoreWriteError

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

    def _recorder(self) -> RunRecorder | None:
        recorder = self.logger._recorder
        return recorder if recorder is not None and recorder.started else None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is None:
            return
        _log_loaders(recorder, "train", [trainer.train_dataloader])
        _log_loaders(recorder, "validation", _as_list(trainer.val_dataloaders))
        # Recorded now, not in log_graph: Lightning restores a checkpoint's optimizer and scheduler
        # state after log_graph, and the rates recorded must be those training starts from.
        log_optimizers(recorder, trainer)
        self._optimizer_indices = {id(optimizer): i for i, optimizer in enumerate(trainer.optimizers)}
        self._epoch = None
        self._open_epoch = None

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is not None and not trainer.training and trainer.state.fn == "validate":
            _log_loaders(recorder, "validation", _as_list(trainer.val_dataloaders))

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        recorder = self._recorder()
        if recorder is not None:
            _log_loaders(recorder, "test", _as_list(trainer.test_dataloaders))

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._enter_epoch(trainer)

    def _enter_epoch(self, trainer: Trainer) -> None:
        self._epoch = trainer.current_epoch
        recorder = self._recorder()
        if recorder is None:
            return
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
            self._end_open_epoch(recorder)  # the last epoch's metrics and checkpoints are in by now
            recorder.stage_ended()

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
