"""Turn whatever users pass as hyperparameters into flat, typed, storable values."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

#: Values the store keeps with their own type; everything else becomes a string.
Scalar = bool | int | float | str | None

_MAX_DEPTH = 8


def flatten_hyperparameters(params: Any, separator: str = ".") -> list[tuple[str, Scalar]]:
    """Flatten hyperparameters into ``(path, value)`` pairs.

    Mappings, ``argparse.Namespace`` and dataclass instances are walked into
    dotted paths (``optimizer.lr``); sequences and sets become a JSON string;
    numpy/torch scalars become Python numbers; anything else becomes its
    ``str``. Never raises for an odd value.

    Example::

        >>> flatten_hyperparameters({"lr": 0.1, "net": {"filters": [16, 32]}})
        [('lr', 0.1), ('net.filters', '[16, 32]')]
    """
    pairs: list[tuple[str, Scalar]] = []
    _walk(_as_mapping(params) or {"value": params}, "", separator, pairs, 0)
    return pairs


def _walk(mapping: Mapping, prefix: str, separator: str, out: list, depth: int) -> None:
    for key, value in mapping.items():
        path = f"{prefix}{separator}{key}" if prefix else str(key)
        nested = _as_mapping(value) if depth < _MAX_DEPTH else None
        if nested is not None and nested:
            _walk(nested, path, separator, out, depth + 1)
        else:
            out.append((path, scalar(value)))


def _as_mapping(value: Any) -> Mapping | None:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, argparse.Namespace):
        return vars(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return None


def scalar(value: Any) -> Scalar:
    """One value as a storable scalar (see :func:`flatten_hyperparameters`)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    item = _number_item(value)
    if item is not _NO_ITEM:
        return item
    if isinstance(value, (list, tuple, set, frozenset)):
        return _json_text(value)
    return _safe_str(value)


_NO_ITEM = object()


def _number_item(value: Any) -> Any:
    """numpy scalars and one-element tensors/arrays as Python numbers."""
    size = getattr(value, "size", None)
    if callable(size):  # torch.Tensor.size is a method
        size = value.numel() if hasattr(value, "numel") else None
    item = getattr(value, "item", None)
    if size == 1 and callable(item) and getattr(value, "ndim", 0) == 0:
        try:
            number = item()
        except Exception:
            return _NO_ITEM
        if isinstance(number, (bool, int, float)):
            return number
    return _NO_ITEM


def _json_text(values: Iterable) -> str:
    items = list(values)
    if isinstance(values, (set, frozenset)):
        items = sorted(items, key=repr)
    try:
        return json.dumps([_jsonable(v) for v in items], ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        return _safe_str(values)


def _jsonable(value: Any) -> Any:
    converted = scalar(value)
    if isinstance(converted, float) and not math.isfinite(converted):
        return str(converted)
    if isinstance(converted, str) and isinstance(value, (list, tuple, set, frozenset)):
        return json.loads(converted)
    return converted


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not stop training
        return f"<unprintable {type(value).__qualname__}>"
