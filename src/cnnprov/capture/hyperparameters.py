"""Turn whatever users pass as hyperparameters into flat, typed, storable values."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import enum
import functools
import inspect
import json
import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

#: Values the store keeps with their own type; everything else becomes a string.
Scalar = bool | int | float | str | datetime.datetime | None

_MAX_DEPTH = 8
#: Arrays and tensors up to this many elements become a JSON list; larger ones their (abbreviated) ``str``.
_MAX_LIST = 1000


def flatten_hyperparameters(params: Any, separator: str = ".") -> list[tuple[str, Scalar]]:
    """Flatten hyperparameters into ``(path, value)`` pairs.

    Mappings, ``argparse.Namespace`` and dataclass instances are walked into
    dotted paths (``optimizer.lr``); sequences, sets, arrays and tensors become
    a JSON string; numpy/torch scalars become Python numbers; enum members
    ``Class.NAME``; functions and classes their qualified name; datetimes stay
    datetimes; anything else becomes its ``str``. Never raises for an odd
    value (self-referencing, broken ``__str__``, ...).

    Example::

        >>> flatten_hyperparameters({"lr": 0.1, "net": {"filters": [16, 32]}})
        [('lr', 0.1), ('net.filters', '[16, 32]')]
    """
    pairs: list[tuple[str, Scalar]] = []
    _walk(_as_mapping(params) or {"value": params}, "", separator, pairs, 0)
    return pairs


def _walk(mapping: Mapping, prefix: str, separator: str, out: list, depth: int) -> None:
    try:
        items = list(mapping.items())
    except Exception:  # a mapping that cannot be walked is recorded as its text
        out.append((prefix or "value", _safe_str(mapping)))
        return
    for key, value in items:
        key = key if isinstance(key, str) else _safe_str(key)
        path = f"{prefix}{separator}{key}" if prefix else key
        nested = _as_mapping(value) if depth < _MAX_DEPTH else None
        if nested is not None and nested:
            _walk(nested, path, separator, out, depth + 1)
        else:
            out.append((path, scalar(value)))


def _as_mapping(value: Any) -> Mapping | None:
    try:
        if isinstance(value, Mapping):
            return value
        if isinstance(value, argparse.Namespace):
            return vars(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    except Exception:  # a hostile __getattr__ or fields(): record the value as text instead
        return None
    return None


def scalar(value: Any) -> Scalar:
    """One value as a storable scalar (see :func:`flatten_hyperparameters`)."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):  # before int/str: IntEnum and str-mixin members are enum members first
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, datetime.datetime):
        try:
            value.astimezone().astimezone(datetime.timezone.utc)  # what recording it takes: naive is local
        except (ValueError, OverflowError):  # datetime.min, say: no instant in UTC, but a text still
            return value.isoformat()
        return value
    item = _number_item(value)
    if item is not _NO_ITEM:
        return item
    if isinstance(value, (list, tuple, set, frozenset)):
        return _json_text(value)
    listed = _array_list(value)
    if listed is not None:
        return _json_text(listed)
    if isinstance(value, functools.partial):
        arguments = [_qualified_name(value.func)] + [repr(scalar(a)) for a in value.args]
        arguments += [f"{k}={scalar(v)!r}" for k, v in value.keywords.items()]
        return f"functools.partial({', '.join(arguments)})"
    if inspect.isclass(value) or inspect.isroutine(value):
        return _qualified_name(value)
    return _safe_str(value)


def class_path(obj: Any) -> str:
    """``module.QualName`` of ``obj``'s class: how records name the Python class of a model, optimizer…"""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _qualified_name(value: Any) -> str:
    """``module.QualName`` of a function or class (its ``str`` would carry a memory address)."""
    module = getattr(value, "__module__", None)
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if not isinstance(name, str):
        return _safe_str(value)
    return f"{module}.{name}" if isinstance(module, str) else name


def _array_list(value: Any) -> list | None:
    """A numpy array or torch tensor with dimensions, as nested lists (small ones only)."""
    try:
        if getattr(value, "ndim", 0) < 1 or not callable(getattr(value, "tolist", None)):
            return None
        size = value.numel() if callable(getattr(value, "numel", None)) else getattr(value, "size", None)
        if not isinstance(size, int) or size > _MAX_LIST:
            return None
        listed = value.tolist()
    except Exception:
        return None
    return listed if isinstance(listed, list) else None


_NO_ITEM = object()


def _number_item(value: Any) -> Any:
    """numpy scalars and zero-dimensional tensors/arrays as Python numbers."""
    try:
        size = getattr(value, "size", None)
        if callable(size):  # torch.Tensor.size is a method
            size = value.numel() if hasattr(value, "numel") else None
        item = getattr(value, "item", None)
        if size == 1 and callable(item) and getattr(value, "ndim", 0) == 0:
            number = item()
            if isinstance(number, float):
                return _shortest(number, getattr(getattr(value, "dtype", None), "itemsize", 8))
            if isinstance(number, (bool, int)):
                return number
    except Exception:  # an object with a hostile __getattr__ is not a number
        return _NO_ITEM
    return _NO_ITEM


def _shortest(number: float, itemsize: int) -> float:
    """A float of a narrower type (``np.float32(0.1)``) as the shortest decimal that is the same
    number in that type (0.1, not the 0.10000000149011612 it widens to)."""
    layout = {4: "f", 2: "e"}.get(itemsize)
    if layout is None or not math.isfinite(number):
        return number
    for digits in range(1, 18):
        candidate = float(f"{number:.{digits}g}")
        try:
            if struct.unpack(layout, struct.pack(layout, candidate))[0] == number:
                return candidate
        except OverflowError:  # beyond the narrow type's range: not that type's value after all
            return number
    return number


def _json_text(values: Iterable) -> str:
    items = list(values)
    if isinstance(values, (set, frozenset)):
        items = sorted(items, key=_safe_repr)
    try:
        return json.dumps([_jsonable(v) for v in items], ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):  # RecursionError: a list that contains itself
        return _safe_str(values)


def _jsonable(value: Any) -> Any:
    converted = scalar(value)
    if isinstance(converted, float) and not math.isfinite(converted):
        return str(converted)
    if isinstance(converted, datetime.datetime):
        return converted.isoformat()
    if isinstance(converted, str) and (
        isinstance(value, (list, tuple, set, frozenset)) or _array_list(value) is not None
    ):
        return json.loads(converted)
    return converted


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not stop training
        return f"<unprintable {type(value).__qualname__}>"


def _safe_str(value: Any) -> str:
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not stop training
        return f"<unprintable {type(value).__qualname__}>"
    return text if type(text) is str else str.__str__(text)
