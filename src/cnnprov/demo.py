"""A small CNN on scikit-learn's handwritten digits, and a hyperparameter sweep recorded with ProvLogger.

The data ship with scikit-learn (``load_digits``: 1,797 real 8×8 images), so
nothing is downloaded. The same model and data module serve the tests and the
benchmarks.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from cnnprov.storage.location import StoreLocation
from cnnprov.storage.protocols import Session


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "the demo trains on scikit-learn's digits: install it with `pip install 'cnnprov[demo]'`"
        ) from error
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.long)


class DigitsDataModule(L.LightningDataModule):
    """Train/validation/test splits of scikit-learn's 8×8 digits.

    Args:
        batch_size: samples per batch.
        limit: use only the first ``limit`` images (tiny runs for tests).
        seed: seed of the split.
    """

    def __init__(self, batch_size: int = 64, limit: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        images, labels = _load_digits()
        if self.hparams["limit"]:
            images, labels = images[: self.hparams["limit"]], labels[: self.hparams["limit"]]
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.hparams["seed"]))
        images, labels = images[order], labels[order]
        n_val = n_test = max(1, len(labels) // 10)
        n_train = len(labels) - n_val - n_test
        self.train_set = TensorDataset(images[:n_train], labels[:n_train])
        self.val_set = TensorDataset(images[n_train : n_train + n_val], labels[n_train : n_train + n_val])
        self.test_set = TensorDataset(images[n_train + n_val :], labels[n_train + n_val :])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size)


class DigitsCNN(L.LightningModule):
    """Two convolution blocks and a linear classifier for 8×8 digit images.

    Args:
        lr: SGD learning rate.
        dropout: dropout rate before the classifier.
        filters: filters of the first convolution (the second has twice as many).
        kernel_size: convolution kernel size.
        momentum: SGD momentum.
        step_size: if set, a StepLR schedule that multiplies the rate by ``gamma`` every ``step_size`` epochs.
        gamma: StepLR factor.
    """

    def __init__(
        self,
        lr: float = 0.05,
        dropout: float = 0.25,
        filters: int = 16,
        kernel_size: int = 3,
        momentum: float = 0.9,
        step_size: int | None = None,
        gamma: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        padding = kernel_size // 2
        self.features = nn.Sequential(
            nn.Conv2d(1, filters, kernel_size, padding=padding),
            nn.BatchNorm2d(filters),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(filters, filters * 2, kernel_size, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(filters * 2 * 2 * 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def _step(self, batch: Sequence[torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(dim=1) == labels).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=on_step, on_epoch=True, prog_bar=stage != "train")
        self.log(f"{stage}_acc", acc, on_step=on_step, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=self.hparams["momentum"])
        if self.hparams["step_size"] is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.hparams["step_size"], self.hparams["gamma"])
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def _checkpoint_root(store: StoreLocation) -> str:
    """Checkpoints of a sweep sit beside its store directory (in the working directory for a server)."""
    return store.beside("-checkpoints")


@dataclass
class SweepResult:
    """One configuration of a sweep and how its run went."""

    run_id: str
    config: dict[str, Any]
    seconds: float
    epochs: int


def default_grid() -> list[dict[str, Any]]:
    """Learning rate × dropout: the four configurations the demo trains."""
    return [{"lr": lr, "dropout": d} for lr, d in itertools.product((0.01, 0.1), (0.0, 0.5))]


def run_sweep(
    store: str | os.PathLike[str] | StoreLocation | None,
    configs: Iterable[dict[str, Any]],
    max_epochs: int = 5,
    limit: int | None = None,
    seed: int = 0,
    progress: Any = print,
    batch_size: int = 64,
) -> list[SweepResult]:
    """Train one :class:`DigitsCNN` per configuration, each recorded by its own ProvLogger.

    The sweep holds the store for all its runs (one session), so runs do not each open and let go of it.

    Args:
        store: the store every run is recorded in.
        configs: keyword arguments of :class:`DigitsCNN`, one dict per run.
        max_epochs: epochs per run.
        limit: use only the first ``limit`` images.
        seed: seed of every run (so runs differ only by their configuration).
        progress: called with one line per finished run (``None`` for silence).
        batch_size: samples per batch.
    """
    location = StoreLocation.parse(store)
    with location.open_session() as session:
        return _train_each(session, location, list(configs), max_epochs, limit, seed, progress, batch_size)


def _train_each(
    session: Session,
    location: StoreLocation,
    configs: list[dict[str, Any]],
    max_epochs: int,
    limit: int | None,
    seed: int,
    progress: Any,
    batch_size: int,
) -> list[SweepResult]:
    from cnnprov.integrations.lightning import ProvLogger

    results = []
    for number, config in enumerate(configs, start=1):
        L.seed_everything(seed, verbose=False)
        name = ",".join(f"{k}={v}" for k, v in config.items())
        logger = ProvLogger(store=session, run_name=name, save_dir=_checkpoint_root(location))
        trainer = L.Trainer(
            max_epochs=max_epochs,
            logger=logger,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
            default_root_dir=_checkpoint_root(location),
        )
        started = time.perf_counter()
        trainer.fit(DigitsCNN(**config), datamodule=DigitsDataModule(batch_size=batch_size, limit=limit, seed=seed))
        seconds = time.perf_counter() - started
        results.append(SweepResult(logger.run_id, config, seconds, trainer.current_epoch))
        if progress:
            progress(
                f"[{number}/{len(configs)}] {name}: {trainer.current_epoch} epochs in {seconds:.1f} s "
                f"({seconds / max(trainer.current_epoch, 1):.2f} s/epoch), "
                f"val_acc={float(trainer.callback_metrics.get('val_acc', float('nan'))):.3f}"
            )
    return results
