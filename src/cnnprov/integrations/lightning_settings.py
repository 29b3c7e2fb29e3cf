"""What a Lightning Trainer was configured with, as plain settings for the run's record."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Trainer

from cnnprov.capture.hyperparameters import class_path

#: Trainer attributes recorded as they are (public, and scalars or None).
_ATTRIBUTES = (
    "precision",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accumulate_grad_batches",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "val_check_interval",
    "check_val_every_n_epoch",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "num_sanity_val_steps",
    "log_every_n_steps",
    "reload_dataloaders_every_n_epochs",
    "fast_dev_run",
    "num_nodes",
)


def trainer_settings(trainer: Trainer) -> dict[str, Any]:
    """The settings that change what a run computes or how long it trains, by Trainer argument name.

    ``strategy`` and ``accelerator`` are their classes; ``devices`` is how many were used;
    ``deterministic`` and ``benchmark`` are what torch was set to (what the Trainer's flags do).
    """
    settings: dict[str, Any] = {}
    for name in _ATTRIBUTES:
        try:
            value = getattr(trainer, name)
        except Exception:  # a property this Lightning version computes differently, or not at all
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            settings[name] = value
    settings["strategy"] = class_path(trainer.strategy)
    settings["accelerator"] = class_path(trainer.accelerator)
    settings["devices"] = trainer.num_devices
    settings["deterministic"] = torch.are_deterministic_algorithms_enabled()
    settings["benchmark"] = bool(torch.backends.cudnn.benchmark)
    return settings

