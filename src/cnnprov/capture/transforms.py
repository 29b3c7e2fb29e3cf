"""A data pipeline's transforms as an ordered plan: each step's class and the settings it exposes.

Duck-typed, as torchvision's pipelines are: a ``Compose`` (anything with a ``transforms`` list) is
unwrapped into its steps, in order; a step's settings are its public attributes that hold plain
values (``Normalize``'s ``mean`` and ``std``, ``RandomCrop``'s ``size`` and ``padding``, a
probability ``p`` …). A plain function or lambda is recorded by its qualified name.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass, field
from typing import Any

from cnnprov.capture.hyperparameters import class_path

#: how deep nested pipelines (a Compose inside a RandomApply …) are unwrapped
_MAX_DEPTH = 8
_PLAIN = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class TransformStep:
    """One step of a pipeline: its position, what it is, and its settings as JSON text."""

    index: int
    python_class: str
    settings: dict[str, Any] = field(default_factory=dict)

    def settings_json(self) -> str:
        return json.dumps(self.settings, sort_keys=True, default=str)


def describe_transforms(transform: Any) -> list[TransformStep]:
    """The steps of ``transform`` in the order they run (empty for ``None``)."""
    steps: list[TransformStep] = []
    _unwrap(transform, steps, 0)
    return steps


def _unwrap(transform: Any, steps: list[TransformStep], depth: int) -> None:
    if transform is None:
        return
    inner = getattr(transform, "transforms", None)
    if depth < _MAX_DEPTH and isinstance(inner, (list, tuple)) and not isinstance(transform, type):
        for step in inner:
            _unwrap(step, steps, depth + 1)
        return
    steps.append(TransformStep(len(steps), _name(transform), _settings(transform)))


def _name(transform: Any) -> str:
    if isinstance(transform, (types.FunctionType, types.BuiltinFunctionType, type)):
        return f"{transform.__module__}.{transform.__qualname__}"
    return class_path(transform)


def _settings(transform: Any) -> dict[str, Any]:
    """Public attributes that hold plain values (or lists and tuples of them, or tensors of a few numbers)."""
    if isinstance(transform, (types.FunctionType, types.BuiltinFunctionType, type)):  # nothing of its own to show
        return {}
    found: dict[str, Any] = {}
    for name, value in sorted(vars(transform).items()) if hasattr(transform, "__dict__") else []:
        if name.startswith("_") or name == "training":
            continue
        plain = _plain(value)
        if plain is not None or value is None:
            found[name] = plain
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, _PLAIN) for item in value):
        return list(value)
    if hasattr(value, "tolist") and getattr(value, "ndim", None) in (0, 1):  # a tensor or array of a few numbers
        listed = value.tolist()
        return listed if not isinstance(listed, list) or len(listed) <= 16 else None
    if isinstance(getattr(value, "value", None), _PLAIN) and hasattr(value, "name"):  # an enum (InterpolationMode)
        return value.value
    return None
