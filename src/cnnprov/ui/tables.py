"""What the dashboard's runs table and compare view show, read through :class:`ProvStore`.

Everything here reads one literal or one summary node per run (the run's hyperparameter listing,
its metric summary), never every value of every run, so a table of a thousand runs stays fast.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cnnprov.analysis.provstore import ProvStore
from cnnprov.analysis.run_filter import lower_is_better

QUERIES = Path(__file__).resolve().parent / "queries"
#: a listing's pairs are separated by ", " before the next ``name=``; a value may hold ", " itself
_PAIR = re.compile(r", (?=[A-Za-z_][\w.\-/\[\]]*=)")


@dataclass
class RunRow:
    """One line of the runs table."""

    run_id: str
    name: str
    status: str
    started: datetime | None
    duration_s: float | None
    epochs: int
    best: float | None = None
    best_epoch: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunsTable:
    """The runs of a store with the best value of ``metric``, and which hyperparameters vary among them."""

    metric: str
    order: str
    rows: list[RunRow]
    varying: list[str]
    constant: list[str]
    #: what the filter noted (a field no run has, a name that is both a setting and a metric)
    hints: list[str] = field(default_factory=list)


def measures(store: ProvStore) -> list[str]:
    """The metric names recorded in the store, sorted."""
    return [str(name) for name in store.query(QUERIES / "measures.rq").column("name")]


def parse_listing(listing: str) -> dict[str, Any]:
    """``"batch_size=64, lr=0.1, name=a, b"`` → ``{"batch_size": 64, "lr": 0.1, "name": "a, b"}``."""
    values: dict[str, Any] = {}
    for pair in _PAIR.split(listing) if listing else []:
        name, _, text = pair.partition("=")
        values[name] = typed(text)
    return values


def typed(text: str) -> Any:
    """The number, boolean or None a listing's text stands for, else the text."""
    if text == "None":
        return None
    if text in ("True", "true", "False", "false"):
        return text in ("True", "true")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def runs_table(
    store: ProvStore, metric: str = "val_acc", order: str | None = None, where: str | None = None
) -> RunsTable:
    """Every run (or those ``where`` selects) with its best ``metric`` and its hyperparameters.

    ``order`` is "max" or "min"; left out, the lowest value is best for a loss or an error and the
    highest for anything else (as the filter language decides).
    """
    order = order or ("min" if lower_is_better(metric) else "max")
    hints: list[str] = []
    runs = store.runs(where=where, hints=hints)
    best = {row["run_id"]: row for row in store.query("best-runs", metric=metric, order=order)}
    listings = {row["run_id"]: row["listing"] for row in store.query(QUERIES / "run-listings.rq")}
    rows = []
    for run in runs:
        found = best.get(run["run_id"], {})
        started, ended = run["started"], run["ended"]
        duration = (ended - started).total_seconds() if isinstance(started, datetime) and ended else None
        rows.append(
            RunRow(
                run_id=run["run_id"],
                name=run["name"] or "",
                status=run["status"] or "",
                started=started,
                duration_s=duration,
                epochs=run["epochs"] or 0,
                best=found.get("best"),
                best_epoch=found.get("epoch"),
                hyperparameters=parse_listing(listings.get(run["run_id"], "")),
            )
        )
    varying, constant = split_varying([row.hyperparameters for row in rows])
    return RunsTable(metric, order, rows, varying, constant, hints)


def split_varying(settings: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The names whose value differs between the given runs (a missing value counts as one), and the rest."""
    names = sorted({name for values in settings for name in values})
    varying = [name for name in names if len({repr(values.get(name)) for values in settings}) > 1]
    return varying, [name for name in names if name not in varying]


@dataclass
class Comparison:
    """The settings that differ among runs: one row per (component, setting), one value per run."""

    runs: list[str]
    names: list[str]
    rows: list[tuple[str, str, list[Any]]]
    checkpoints: dict[str, dict[str, Any] | None]
    #: per run: what its epochs used (system-usage), summed or at their worst
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)


def compare(store: ProvStore, runs: list[str]) -> Comparison:
    """What differs among ``runs`` (ids): each run against the first by the ``compare-runs`` query.

    A setting on which two runs differ differs from the first run's value in at least one of
    them, so the pairs against the first cover every difference.
    """
    ids = [store.resolve_run(run) for run in runs]
    names = {row["run_id"]: row["name"] or row["run_id"][:8] for row in store.runs()}
    base = ids[0]
    values: dict[tuple[str, str], dict[str, Any]] = {}
    for other in ids[1:]:
        for row in store.query("compare-runs", run_a=base, run_b=other, include="settings"):  # resources: below
            cell = values.setdefault((row["component"], row["setting"]), {})
            cell[base] = row["value_a"]
            cell[other] = row["value_b"]
    rows = []
    for (component, setting), cell in sorted(values.items()):
        first = cell.get(base)
        rows.append((component, setting, [cell.get(run, first) for run in ids]))
    resources = {run: resource_summary(store, run) for run in ids}
    checkpoints = {run: kept_checkpoint(store, run) for run in ids}
    return Comparison(ids, [names.get(run, run[:8]) for run in ids], rows, checkpoints, resources)


def resource_summary(store: ProvStore, run: str) -> dict[str, Any]:
    """What a run's epochs used: CPU seconds in all, the mean step time, the slowest epoch's 95th
    percentile step time, and the peak memory (the ``system-usage`` question's rows, folded)."""
    rows = store.query("system-usage", run=run).to_dicts()

    def values(key: str) -> list[float]:
        return [row[key] for row in rows if isinstance(row[key], (int, float))]

    steps = sum(values("steps"))
    weighted = sum(row["step_mean_ms"] * row["steps"] for row in rows if row["step_mean_ms"] is not None)
    return {
        "epochs": len(rows),
        "cpu_s": sum(values("cpu_s")) if rows else None,
        "step_mean_ms": weighted / steps if steps else None,
        "step_p95_ms": max(values("step_p95_ms"), default=None),
        "peak_rss_mib": max(values("peak_rss_mib"), default=None),
        "gpu_peak_mib": max(values("gpu_peak_mib"), default=None),
    }


def kept_checkpoint(store: ProvStore, run: str) -> dict[str, Any] | None:
    """The run's newest checkpoint whose file is still on disk (or its newest, if none is)."""
    checkpoints = store.query("checkpoints", run=run).to_dicts()
    if not checkpoints:
        return None
    on_disk = [c for c in checkpoints if isinstance(c["path"], str) and os.path.exists(c["path"])]
    kept = dict((on_disk or checkpoints)[-1])
    kept["on_disk"] = bool(on_disk)
    return kept


def number(value: Any) -> float | None:
    """A value as a float for a plot axis, or None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
