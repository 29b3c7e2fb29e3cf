"""Pictures of a store's runs with matplotlib: learning curves and a hyperparameter's effect.

Needs the ``analysis`` extra (``pip install 'cnnprov[analysis]'``). Every plot is
drawn from the bundled queries, so what a picture shows is what
``cnnprov query`` answers.

Example::

    from cnnprov import ProvStore
    from cnnprov.analysis.plots import learning_curves, save

    figure = learning_curves(ProvStore("provenance"), metric="val_loss")
    save(figure, "curves.png")
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from cnnprov.analysis.provstore import ProvStore


def _pyplot() -> Any:
    try:
        import matplotlib

        if not os.environ.get("MPLBACKEND"):
            matplotlib.use("Agg")  # files, not windows; a notebook's inline backend is kept
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'cnnprov[analysis]'") from error
    return plt


def differing_hyperparameters(store: ProvStore) -> dict[str, str]:
    """Each run's label made of the hyperparameters whose values differ between runs.

    Runs that share every value are told apart by their name.
    """
    values: dict[str, dict[str, Any]] = defaultdict(dict)
    names: dict[str, str] = {}
    for row in store.query("hyperparameters"):
        values[row["run_id"]][row["name"]] = row["value"]
        names[row["run_id"]] = row["run_name"] or row["run_id"][:8]
    keys = sorted({k for settings in values.values() for k in settings})
    differing = [k for k in keys if len({repr(v.get(k)) for v in values.values()}) > 1]
    labels = {}
    for run_id, settings in values.items():
        label = ", ".join(f"{k}={_short(settings.get(k))}" for k in differing)
        labels[run_id] = label or names[run_id]
    return labels


def learning_curves(store: ProvStore, metric: str = "val_acc", ax: Any = None) -> Any:
    """One line per run: ``metric`` per epoch, labelled by the hyperparameters that differ."""
    plt = _pyplot()
    rows = store.query("learning-curves", metric=metric).to_dicts()
    if not rows:
        raise ValueError(f"no run in '{store.path}' has epoch values of '{metric}'")
    labels = differing_hyperparameters(store)
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        curves[row["run_id"]].append((row["epoch"], row["mean"]))
    figure, ax = _axes(plt, ax)
    for run_id, points in sorted(curves.items(), key=lambda item: labels.get(item[0], item[0])):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=labels.get(run_id, run_id[:8]))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def hyperparameter_effect(
    store: ProvStore, name: str, metric: str = "val_acc", order: str = "max", ax: Any = None
) -> Any:
    """Each run's best ``metric`` against its value of hyperparameter ``name``, with the mean per value."""
    plt = _pyplot()
    effect = store.query("hyperparameter-effect", name=name, metric=metric, order=order).to_dicts()
    if not effect:
        raise ValueError(f"no run in '{store.path}' has both a hyperparameter '{name}' and values of '{metric}'")
    best = {row["run_id"]: row["best"] for row in store.query("best-runs", metric=metric, order=order)}
    setting = {row["run_id"]: row["value"] for row in store.query("hyperparameters") if row["name"] == name}
    numeric = all(isinstance(row["value"], (int, float)) and not isinstance(row["value"], bool) for row in effect)
    figure, ax = _axes(plt, ax)
    if numeric:
        position = {row["value"]: row["value"] for row in effect}
    else:
        position = {row["value"]: index for index, row in enumerate(effect)}
        ax.set_xticks(list(position.values()), [_short(v) for v in position])
    runs = [(setting[r], b) for r, b in best.items() if r in setting and setting[r] in position]
    ax.scatter([position[v] for v, _ in runs], [b for _, b in runs], alpha=0.6, label=f"a run's {order} {metric}")
    line = sorted((position[row["value"]], row["mean_best"]) for row in effect)
    ax.plot([x for x, _ in line], [y for _, y in line], marker="D", color="black", label="mean over runs")
    ax.set_xlabel(name)
    ax.set_ylabel(f"{order} {metric}")
    ax.set_title(f"effect of {name} on {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def save(figure: Any, path: str | os.PathLike) -> None:
    """Write a figure; the format follows the file's extension (png, svg, pdf)."""
    figure.savefig(path, bbox_inches="tight", dpi=120)


def _axes(plt: Any, ax: Any) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    figure, ax = plt.subplots(figsize=(7, 4.5))
    return figure, ax


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
