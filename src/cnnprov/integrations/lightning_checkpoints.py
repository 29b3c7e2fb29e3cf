"""Every checkpoint file a Trainer writes, ``ModelCheckpoint``'s or a manual
``trainer.save_checkpoint(path)``: Lightning tells loggers only of the first."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO


class RecordingCheckpointIO(CheckpointIO):
    """The Trainer's own checkpoint IO, noting each path it saves to (in ``saved``) and telling
    ``listener`` after each save. Saving, loading and removing are the inner IO's, unchanged."""

    def __init__(self, inner: CheckpointIO, listener: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.listener = listener
        self.saved: list[str] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)
        self.saved.append(os.fspath(path))
        if self.listener is not None:
            self.listener()

    def load_checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.load_checkpoint(*args, **kwargs)

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()

    def taken(self) -> list[str]:
        """The paths saved since the last call."""
        saved, self.saved = self.saved, []
        return saved


def run_named_by(path: Any, key: str) -> str | None:
    """The run id a checkpoint file names (``ProvCallback.on_save_checkpoint`` put it there), if any.

    The file is memory-mapped and its tensors are not read: this costs milliseconds whatever its
    size. A file torch cannot read this way, or one without the entry, names none."""
    import torch

    try:
        checkpoint = torch.load(os.fspath(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch zip file, or objects weights_only refuses: no name to go by
        return None
    entry = checkpoint.get(key) if isinstance(checkpoint, dict) else None
    run_id = entry.get("run_id") if isinstance(entry, dict) else None
    return run_id if isinstance(run_id, str) else None


def install(strategy: Any, listener: Callable[[], None]) -> RecordingCheckpointIO:
    """Put a :class:`RecordingCheckpointIO` around the strategy's checkpoint IO (once)."""
    current = strategy.checkpoint_io
    if isinstance(current, RecordingCheckpointIO):
        current.listener = listener
        return current
    recording = RecordingCheckpointIO(current, listener)
    strategy.checkpoint_io = recording
    return recording
