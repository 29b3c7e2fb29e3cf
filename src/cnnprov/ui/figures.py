"""The dashboard's charts as Plotly figure dicts (JSON the page hands to ``Plotly.react``).

Learning curves read each selected run's values of one metric (``ProvStore.metric_values``);
the views across runs read the runs table (one summary per run), never every value of every run.
"""

from __future__ import annotations

from typing import Any

from cnnprov.analysis.provstore import ProvStore
from cnnprov.ui.tables import RunsTable, number

_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "template": "plotly_white", "height": 420}


def curves(store: ProvStore, runs: list[str], metric: str, names: dict[str, str] | None = None) -> dict[str, Any]:
    """One line per run of ``metric``: by epoch for an epoch-level metric, by step for a step-level one."""
    traces, level = [], "epoch"
    for run in runs:
        values = store.metric_values(run, metric).to_dicts()
        if any(row["level"] == "step" for row in values):
            level = "step"
        key = "step" if level == "step" else "epoch"
        values.sort(key=lambda row: (row[key] if row[key] is not None else -1, row["time"] or 0))
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": (names or {}).get(run, run[:8]),
                "x": [row[key] for row in values],
                "y": [number(row["value"]) for row in values],
                "meta": run,
            }
        )
    layout = {
        **_LAYOUT,
        "title": {"text": metric},
        "xaxis": {"title": {"text": level}},
        "yaxis": {"title": {"text": metric}},
    }
    return {"data": traces, "layout": layout}


def scatter(table: RunsTable, name: str) -> dict[str, Any]:
    """One point per run: hyperparameter ``name`` against the best ``table.metric``."""
    points = [row for row in table.rows if name in row.hyperparameters]
    trace = {
        "type": "scatter",
        "mode": "markers",
        "x": [
            row.hyperparameters[name]
            if number(row.hyperparameters[name]) is not None
            else str(row.hyperparameters[name])
            for row in points
        ],
        "y": [number(row.best) for row in points],
        "text": [row.name for row in points],
        "marker": {"size": 9},
    }
    layout = {
        **_LAYOUT,
        "title": {"text": f"{name} → best {table.metric}"},
        "xaxis": {"title": {"text": name}},
        "yaxis": {"title": {"text": f"best {table.metric}"}},
    }
    return {"data": [trace], "layout": layout}


def study_choices(trials: Any) -> dict[str, Any]:
    """How the sampler's choices evolved: each suggested setting by trial number, one panel per setting,
    marker colour the trial's objective value (grey where it has none: pruned or failed)."""
    from cnnprov.ui.tables import parse_listing

    rows = trials.to_dicts()
    names = sorted({name for row in rows for name in parse_listing(row.get("settings") or "")})
    traces = []
    for index, name in enumerate(names, start=1):
        chosen = [(row["trial"], parse_listing(row.get("settings") or "").get(name), row) for row in rows]
        chosen = [item for item in chosen if item[1] is not None]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": name,
                "x": [trial for trial, _, _ in chosen],
                "y": [value for _, value, _ in chosen],
                "text": [f"{row['study_name']} · {row['state']} · value {row['value']}" for _, _, row in chosen],
                "marker": {"size": 9, "color": [number(row["value"]) for _, _, row in chosen], "colorscale": "Viridis"},
                "xaxis": "x",
                "yaxis": f"y{index if index > 1 else ''}",
            }
        )
    layout: dict[str, Any] = {
        **_LAYOUT,
        "title": {"text": "the sampler's choices, trial by trial"},
        "showlegend": False,
    }
    layout["height"] = max(260, 170 * len(names))
    layout["grid"] = {"rows": max(len(names), 1), "columns": 1, "pattern": "coupled"}
    for index, name in enumerate(names, start=1):
        layout[f"yaxis{index if index > 1 else ''}"] = {"title": {"text": name}}
    layout["xaxis"] = {"title": {"text": "trial"}}
    return {"data": traces, "layout": layout}
