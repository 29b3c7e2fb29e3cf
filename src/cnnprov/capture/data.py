"""Describe the data a loader serves, as plain data (duck-typed: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnprov.capture.hyperparameters import class_path

#: How deep wrappers (``Subset`` of a ``Subset`` …) are unwrapped before giving up.
_MAX_WRAPPERS = 16


@dataclass(frozen=True)
class DataDescription:
    """What a run's data was: the class of the dataset it came from, how many samples were served, in what batches."""

    dataset_class: str | None
    sample_count: int | None
    batch_size: int | None
    batch_count: int | None


def describe_loader(loader: Any, batch_count: int | float | None = None) -> DataDescription:
    """A loader's data. ``batch_count`` is how many batches a stage takes from it (Lightning's
    ``limit_*_batches`` cut ``len(loader)`` short); ``len(loader)`` when not given."""
    dataset = getattr(loader, "dataset", None)
    if batch_count is None or not _is_count(batch_count):
        batch_count = length(loader)
    return DataDescription(
        dataset_class=class_path(underlying_dataset(dataset)) if dataset is not None else None,
        sample_count=length(dataset),
        batch_size=getattr(loader, "batch_size", None),
        batch_count=int(batch_count) if batch_count is not None else None,
    )


def underlying_dataset(dataset: Any) -> Any:
    """The dataset a wrapper such as ``torch.utils.data.Subset`` (what ``random_split`` returns)
    wraps, down to the first that wraps nothing: its class is what a user asks for by name.
    A ``ConcatDataset`` of datasets of one class counts as that class."""
    for _ in range(_MAX_WRAPPERS):
        inner = getattr(dataset, "dataset", None)
        if inner is None:
            parts = getattr(dataset, "datasets", None)
            if isinstance(parts, (list, tuple)) and parts:
                underlying = [underlying_dataset(part) for part in parts]
                if len({type(part) for part in underlying}) == 1:
                    return underlying[0]
            return dataset
        dataset = inner
    return dataset


def _is_count(value: int | float) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def length(obj: Any) -> int | None:
    try:
        return len(obj)
    except Exception:  # iterable datasets have no length
        return None

