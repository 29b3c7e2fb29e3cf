"""When a run's architecture is described: at once, or after the model's first training step, traced.

A model is best described once it has trained a step: a lazy module's parameters
exist only after its first call, and the order layers run in, with the functional
operations between them, is seen only while a step runs. :class:`ArchitectureCapture`
decides when, and describes the model once per run.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

from cnnprov.capture.architecture import ModelDescription, describe_model, has_lazy_parameters
from cnnprov.capture.forward_trace import MAX_OPERATIONS, ForwardTrace


class ArchitectureCapture:
    """The one description of a run's model: what is due to be recorded, when.

    Each method returns the description to record now, or ``None`` (recorded already, or waiting).
    """

    def __init__(self) -> None:
        self.recorded = False
        self._model: Callable[[], Any] | None = None  # the model waiting to be described
        self._waits_for_step = False
        self._trace: ForwardTrace | None = None

    def request(self, model: Any, after_first_step: bool = False) -> ModelDescription | None:
        """The model, now; or, ``after_first_step`` or while lazy parameters wait, once a step is traced."""
        if self.recorded:
            return None
        if after_first_step or has_lazy_parameters(model):
            self._model = _reference(model)
            self._waits_for_step = self._waits_for_step or after_first_step
            return None
        return self._described(describe_model(model))

    def step_started(self, model: Any) -> None:
        """A training step of ``model`` starts: trace it, unless the architecture is recorded already."""
        if self.recorded or self._trace is not None:
            return
        self._model = _reference(model)
        self._trace = ForwardTrace(model)
        self._trace.start()

    def step_ended(self) -> ModelDescription | None:
        """The traced step ended: the model's layers in execution order, with its functional operations."""
        trace, self._trace = self._trace, None
        if trace is None or self.recorded:
            return None
        trace.stop()
        failure = trace.failure or (None if trace.first_calls else "no module of the model ran")
        if failure is not None:
            return self._described(
                describe_model(trace.model),
                f"the training step could not be traced ({failure}): layers are in registration order "
                "and the functional operations are not known",
            )
        model = describe_model(trace.model, trace.first_calls)
        model.operations = trace.operations
        if trace.skipped_operations:
            model.notes.append(
                f"the traced step called {MAX_OPERATIONS + trace.skipped_operations} functional operations: "
                f"the first {MAX_OPERATIONS} are recorded"
            )
        return self._described(model)

    def pending(self) -> ModelDescription | None:
        """What still waits when the stage ends (no step ran, or it failed): the model as it is now."""
        cut_short = self._trace is not None
        if self._trace is not None:
            self._trace.stop()
            self._trace = None
        model = self._model() if self._model is not None else None
        if self.recorded or model is None:
            return None
        note = None
        if cut_short or self._waits_for_step:
            reason = "the traced training step did not complete" if cut_short else "no training step ran"
            note = f"{reason}: layers are in registration order and the functional operations are not known"
        return self._described(describe_model(model), note)

    def _described(self, model: ModelDescription, note: str | None = None) -> ModelDescription:
        """``model``, recorded from now on; ``note`` says what it lacks (and a warning says so too)."""
        self.recorded = True
        self._model = None
        lacking = [note] if note is not None else []
        uninitialized = model.uninitialized_parameters
        if uninitialized:
            lacking.append(
                f"{uninitialized} parameter tensors of lazy modules were not materialized when the architecture "
                "was recorded: they are in no parameter count"
            )
        for text in lacking:
            warnings.warn(f"cnnprov: the architecture record is incomplete: {text}", stacklevel=3)
        model.notes += lacking
        return model


def _reference(model: Any) -> Callable[[], Any]:
    """A weak reference where the model takes one: waiting to describe it must not keep it alive."""
    try:
        return weakref.ref(model)
    except TypeError:
        return lambda: model
