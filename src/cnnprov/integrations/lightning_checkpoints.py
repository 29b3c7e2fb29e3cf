"""Every checkpoint file a Trainer writes, ``ModelCheckpoint``'s or a manual
``trainer.save_checkpoint(path)``: Lightning tells loggers only of the first."""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
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


class SeenFiles:
    """Checkpoint files looked at so far, each by its real path and the (mtime, size) it had then."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int]] = {}

    def is_new(self, path: str) -> bool:
        """Whether ``path`` was written or rewritten since we last looked (and remember it)."""
        try:
            stat = os.stat(path)
        except OSError:
            return False
        signature, real = (stat.st_mtime_ns, stat.st_size), os.path.realpath(path)
        if self._seen.get(real) == signature:
            return False
        self._seen[real] = signature
        return True

    def written_by(self, callback: Any) -> list[str]:
        """Files a ``ModelCheckpoint`` has written or rewritten since we last looked (its public attributes)."""
        # monitored checkpoints are in best_k_models; unmonitored ones (the default) in best_model_path
        candidates = [*list(callback.best_k_models), callback.best_model_path, callback.last_model_path]
        return [path for path in dict.fromkeys(p for p in candidates if p) if self.is_new(path)]


def run_named_by(path: Any, key: str) -> str | None:
    """The run id a checkpoint file names (``ProvCallback.on_save_checkpoint`` put it there), if any.

    Only the pickled index of the torch zip file is read, with every class it names replaced
    by a stand-in and no tensor loaded: nothing of the file's own code runs, it costs
    milliseconds whatever the file's size, and hyperparameters of any type do not get in the
    way. A file that is not a torch zip file, or has no such entry, names none."""
    try:
        checkpoint = _index_of(os.fspath(path))
    except Exception:  # not a torch zip file, or a pickle even stand-ins cannot read
        return None
    entry = checkpoint.get(key) if isinstance(checkpoint, dict) else None
    run_id = entry.get("run_id") if isinstance(entry, dict) else None
    return run_id if isinstance(run_id, str) else None


class _StandIn:
    """What a class named in a checkpoint's pickle becomes: anything, holding nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _IndexReader(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN:  # containers the run-id entry is made of
            return _PLAIN[(module, name)]
        return _StandIn

    def persistent_load(self, pid: Any) -> None:  # a tensor's storage: not read
        return None


_PLAIN: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


def _index_of(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        index = next(name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl")
        with archive.open(index) as handle:
            return _IndexReader(handle).load()


def install(strategy: Any, listener: Callable[[], None]) -> RecordingCheckpointIO:
    """Put a :class:`RecordingCheckpointIO` around the strategy's checkpoint IO (once)."""
    current = strategy.checkpoint_io
    if isinstance(current, RecordingCheckpointIO):
        current.listener = listener
        return current
    recording = RecordingCheckpointIO(current, listener)
    strategy.checkpoint_io = recording
    return recording
