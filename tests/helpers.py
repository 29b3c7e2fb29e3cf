"""Tiny real training for the tests: a few batches of scikit-learn's digits."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from cnnprov import ProvLogger
from cnnprov.demo import DigitsDataModule

#: Images used by tiny runs: enough for a few batches of 16.
TINY_LIMIT = 160


def tiny_trainer(root: Path, logger: ProvLogger | None = None, **overrides) -> L.Trainer:
    """A real Trainer that runs a few batches per epoch."""
    options = dict(
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=2,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    options.update(overrides)
    return L.Trainer(logger=logger, **options)


def tiny_data(**overrides) -> DigitsDataModule:
    options = dict(batch_size=16, limit=TINY_LIMIT)
    options.update(overrides)
    return DigitsDataModule(**options)
