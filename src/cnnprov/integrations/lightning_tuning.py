"""What Lightning's tuning changed before a fit trained: a learning-rate finder and the values it set.

Lightning logs a module's *initial* hyperparameters (``hparams_initial``), so a value the
learning-rate finder (``Tuner(trainer).lr_find`` or the ``LearningRateFinder`` callback)
set afterwards would be recorded stale, and the run filed under a rate it never used.
:func:`record_tuning` runs when a fit's first stage starts: each hyperparameter whose
value then differs from the initial one is recorded with the value training starts from,
and a ``LearningRateFinder`` callback the Trainer holds is recorded as the finder activity
with its trials (the rates tried and the loss at each, as two series) and its suggestion.
``Tuner.lr_find`` runs its finder in a fit of its own that ends before any logger is told of
it, and takes the callback away again: then only the value it set is seen.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateFinder

from cnnprov.capture.hyperparameters import flatten_hyperparameters, scalar
from cnnprov.capture.recorder import RunRecorder
from cnnprov.rdf.vocab import literal


def record_tuning(recorder: RunRecorder, trainer: Trainer, model: LightningModule) -> None:
    """Record the finder the Trainer ran and the hyperparameter values it (or anything) changed."""
    finder = next(
        (cb for cb in trainer.callbacks if isinstance(cb, LearningRateFinder) and cb.optimal_lr is not None),  # type: ignore[attr-defined]
        None,
    )
    changed = _changed_hyperparameters(model)
    if finder is not None:
        results: dict[str, Any] = finder.optimal_lr.results  # type: ignore[union-attr]
        suggestion = finder.optimal_lr.suggestion()  # type: ignore[union-attr]
        # the attribute it sets: the one it was given, else the first of these the module has
        names = (finder._attr_name,) if getattr(finder, "_attr_name", "") else ("lr", "learning_rate")
        recorder.log_learning_rate_finder(
            [float(lr) for lr in results.get("lr", [])],
            [float(loss) for loss in results.get("loss", [])],
            suggestion,
            sets=next((path for path in changed if path in names), None),
        )
    if changed:
        recorder.update_hyperparameters(changed)


def _changed_hyperparameters(model: LightningModule) -> dict[str, Any]:
    """Hyperparameter paths whose value now differs from the one the module was constructed with."""
    try:
        initial = dict(flatten_hyperparameters(model.hparams_initial))
        current = flatten_hyperparameters(model.hparams)
    except Exception:  # hyperparameters of a kind that do not flatten: nothing to compare
        return {}
    return {
        path: value
        for path, value in current
        if path in initial and literal(scalar(value)) != literal(scalar(initial[path]))
    }
