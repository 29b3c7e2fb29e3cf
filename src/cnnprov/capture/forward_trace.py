"""Watch one training step of a model: the order its modules run in and the functional calls their forwards make.

A :class:`ForwardTrace` puts a forward pre-hook and a forward hook on every module
of the model; while a module of the model runs, a ``TorchFunctionMode`` sees each
torch function called. Operations inside a built-in layer's own forward (the
``conv2d`` of a ``Conv2d``) are that layer's and are left out; those of a container's
forward (the ``F.relu`` a model applies between two layers) are recorded, with
their non-tensor arguments. Everything is removed when the step ends: the cost is
one step's. A trace that fails never fails the step; it says why in :attr:`failure`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from cnnprov.capture.architecture import OperationDescription, layer_modules

#: At most this many operations are recorded: a model that calls more in one step is summarized by a note.
MAX_OPERATIONS = 2000
_NOT_OPERATIONS = set(
    "Optional assert_int_or_pair boolean_dispatch handle_torch_function"
    " has_torch_function has_torch_function_unary has_torch_function_variadic".split()
)
#: Tensor-level calls that shape a network besides ``torch.nn.functional``'s (residual sums, reshapes, pooling by mean).
_STRUCTURAL = set(
    "flatten reshape view cat concat stack add __add__ __iadd__ __radd__ mul __mul__ __imul__ __rmul__"
    " matmul __matmul__ mean amax transpose permute chunk split relu sigmoid tanh softmax dropout"
    " sub __sub__ __rsub__ div __truediv__ __rtruediv__".split()
)


class ForwardTrace:
    """The module order and functional operations of one training step of ``model``.

    Call :meth:`start` before the step and :meth:`stop` after it (also after a failed step).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.first_calls: dict[int, int] = {}  # id(module) → position of its first call
        self.operations: list[OperationDescription] = []
        self.skipped_operations = 0  # over MAX_OPERATIONS
        self.failure: str | None = None
        self._names: dict[int, str] = {}
        self._own_computation: set[int] = set()  # built-in layers (their calls are the layer itself), metrics
        self._running: list[Any] = []  # the modules whose forward is running, innermost last
        self._handles: list[Any] = []
        self._mode: Any = None
        self._mode_active = False
        self._outermost: set[int] = set()  # the modules a forward pass started from
        self._signatures: dict[Any, list[str] | None] = {}

    def start(self) -> None:
        """Hook every module of the model; nothing is traced until one of them runs."""
        try:
            from torch.overrides import TorchFunctionMode

            trace = self

            class _Operations(TorchFunctionMode):
                def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                    kwargs = kwargs or {}
                    trace._called(func, args, kwargs)
                    return func(*args, **kwargs)

            self._mode = _Operations()
            root = type(self.model).__name__
            for _name, module, whole in layer_modules(self.model):
                if whole and type(module).__module__.startswith("torch.nn."):
                    self._own_computation.add(id(module))
            for name, module in self.model.named_modules():
                self._names.setdefault(id(module), name or root)
                if type(module).__module__.startswith("torchmetrics."):  # a module, but no part of the network
                    self._own_computation.add(id(module))
                self._handles.append(module.register_forward_pre_hook(self._entered))
                self._handles.append(module.register_forward_hook(self._left, always_call=True))
        except Exception as error:  # a scripted model takes no hooks; an old torch has no TorchFunctionMode
            self._fail(error)
            self.stop()

    def stop(self) -> None:
        """Remove every hook (and the mode, if a forward was cut short)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._running = []
        self._exit_mode()

    # -- hooks ---------------------------------------------------------------
    def _entered(self, module: Any, args: Any) -> None:
        try:
            self.first_calls.setdefault(id(module), len(self.first_calls))
            # One forward pass: a module called again from outside (a second view, a GAN's second
            # pass, a recomputation) adds no operations; the order of first calls goes on.
            if not self._running and id(module) not in self._outermost:
                self._outermost.add(id(module))
                self._mode.__enter__()
                self._mode_active = True
            self._running.append(module)
        except Exception as error:
            self._fail(error)

    def _left(self, module: Any, args: Any, output: Any) -> None:
        try:
            if self._running and self._running[-1] is module:
                self._running.pop()
                if not self._running:
                    self._exit_mode()
        except Exception as error:
            self._fail(error)

    def _exit_mode(self) -> None:
        if self._mode_active:
            self._mode_active = False
            try:
                self._mode.__exit__(None, None, None)
            except Exception as error:  # another mode was left on top of ours
                self._fail(error)

    def _called(self, func: Any, args: Any, kwargs: dict[str, Any]) -> None:
        try:
            if not self._running or id(self._running[-1]) in self._own_computation:
                return
            name = _function_name(func)
            if name is None:
                return
            if len(self.operations) >= MAX_OPERATIONS:
                self.skipped_operations += 1
                return
            module = self._names.get(id(self._running[-1]), "")
            arguments = self._arguments(func, args, kwargs)
            self.operations.append(OperationDescription(len(self.operations), name, module, arguments))
        except Exception as error:  # never fail the step over a record
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = f"{type(error).__name__}: {error}"

    # -- arguments -----------------------------------------------------------
    def _arguments(self, func: Any, args: Any, kwargs: dict[str, Any]) -> str:
        """The non-tensor arguments as in a call: ``2, stride=2`` (named where the signature is known)."""
        names = self._parameter_names(func)
        parts = []
        for position, value in enumerate(args):
            if not _holds_tensor(value):
                label = names[position] if names is not None and position < len(names) else None
                parts.append(f"{label}={_text(value)}" if label else _text(value))
        parts += [f"{key}={_text(value)}" for key, value in kwargs.items() if not _holds_tensor(value)]
        return ", ".join(parts)

    def _parameter_names(self, func: Any) -> list[str] | None:
        if func not in self._signatures:
            self._signatures[func] = _positional_names(func)
        return self._signatures[func]


def _positional_names(func: Any) -> list[str] | None:
    """The names of a function's positional parameters; ``None`` when its signature is not known."""
    import torch.nn.functional as F

    candidates: list[Callable[..., Any]] = [func]
    # F.max_pool2d and its like dispatch on a flag through (*args, **kwargs): their variant has the signature
    private = getattr(F, "_" + getattr(func, "__name__", ""), None)
    if getattr(func, "__module__", None) == "torch.nn.functional" and callable(private):
        candidates.append(private)
    for candidate in candidates:
        try:
            parameters = inspect.signature(candidate).parameters.values()
        except (TypeError, ValueError):  # a builtin
            continue
        names = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if names:
            return names
    return None


def _function_name(func: Any) -> str | None:
    """``torch.nn.functional.relu``, ``torch.flatten``, ``torch.Tensor.view``; ``None`` for a call not recorded."""
    name = getattr(func, "__name__", None)
    if not isinstance(name, str):
        return None
    if getattr(func, "__module__", None) == "torch.nn.functional":
        return f"torch.nn.functional.{name}" if name not in _NOT_OPERATIONS and not name.startswith("_") else None
    if name not in _STRUCTURAL and name not in _functional_names():
        return None
    if hasattr(func, "__objclass__") or "Tensor" in getattr(func, "__qualname__", ""):
        return f"torch.Tensor.{name}"
    return f"torch.{name}"


_FUNCTIONAL: set[str] = set()


def _functional_names() -> set[str]:
    """The public functions of ``torch.nn.functional`` (``conv2d`` is also ``torch.conv2d``)."""
    if not _FUNCTIONAL:
        import torch.nn.functional as F

        public = (name for name, value in vars(F).items() if callable(value) and not isinstance(value, type))
        _FUNCTIONAL.update(name for name in public if not name.startswith("_") and name not in _NOT_OPERATIONS)
    return _FUNCTIONAL


def _holds_tensor(value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value)


def _text(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
