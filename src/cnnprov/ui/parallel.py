"""Parallel coordinates of hyperparameters → a metric, one line per run, in two drawings.

:func:`parallel_lines` draws the lines as SVG (Plotly scatter traces, a few of them: one per
colour band of the metric, each run a segment between gaps). It needs no WebGL, so it draws in
well under a second for a thousand runs on any machine. :func:`parallel_coordinates` is Plotly's
``parcoords`` trace, whose axes can be brushed to select runs; it draws with WebGL, which costs
seconds where the browser has no GPU (software rendering), so the page offers it on request.
"""

from __future__ import annotations

import math
from typing import Any

from cnnprov.ui.tables import RunsTable, number

_LAYOUT = {"margin": {"l": 40, "r": 40, "t": 70, "b": 40}, "template": "plotly_white", "height": 460}
#: colour bands of the metric in the SVG drawing (Viridis, low to high)
_BANDS = ("#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725")


def _label(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _axis(table: RunsTable, name: str) -> dict[str, Any]:
    """A parcoords dimension for one hyperparameter: numbers as they are, other values coded."""
    raw = [row.hyperparameters.get(name) for row in table.rows]
    numeric = [number(value) for value in raw]
    if all(value is not None for value in numeric):
        return {"label": name, "values": numeric}
    labels = sorted({_label(value) for value in raw})
    codes = {label: index for index, label in enumerate(labels)}
    values = [codes[_label(value)] for value in raw]
    return {"label": name, "values": values, "tickvals": list(range(len(labels))), "ticktext": labels}


def parallel_coordinates(table: RunsTable) -> dict[str, Any]:
    """Plotly ``parcoords`` (WebGL, brushable): the varying hyperparameters, then the best ``table.metric``."""
    dimensions = [_axis(table, name) for name in table.varying]
    best = [number(row.best) for row in table.rows]
    dimensions.append({"label": f"best {table.metric}", "values": best})
    # JSON has no NaN: a run without a value is coloured as the lowest
    lowest = min((value for value in best if value is not None), default=0.0)
    trace = {
        "type": "parcoords",
        "dimensions": dimensions,
        "line": {
            "color": [value if value is not None else lowest for value in best],
            "colorscale": "Viridis",
            "showscale": True,
        },
        "customdata": [row.run_id for row in table.rows],
    }
    return {"data": [trace], "layout": {**_LAYOUT, "title": {"text": f"hyperparameters → best {table.metric}"}}}


def _scaled(values: list[Any]) -> tuple[list[float | None], list[tuple[float, str]]]:
    """Values placed on [0, 1] and the ticks of the axis: numbers linearly (logarithmically when
    positive and spread over two decades or more), anything else as evenly spaced categories."""
    numeric = [number(value) for value in values]
    present = [value for value in numeric if value is not None]
    if present and len(present) == len([v for v in values if v is not None]):
        low, high = min(present), max(present)
        log = low > 0 and high / low >= 100
        scale = (lambda v: math.log10(v)) if log else (lambda v: v)
        a, b = scale(low), scale(high)
        placed = [None if v is None else (0.5 if b == a else (scale(v) - a) / (b - a)) for v in numeric]
        ticks = [(0.0, f"{low:.4g}"), (1.0, f"{high:.4g}")] if b != a else [(0.5, f"{low:.4g}")]
        return placed, ticks
    labels = sorted({_label(value) for value in values if value is not None})
    spacing = max(len(labels) - 1, 1)
    position = {label: (index / spacing if len(labels) > 1 else 0.5) for index, label in enumerate(labels)}
    return [None if v is None else position[_label(v)] for v in values], [(p, label) for label, p in position.items()]


def parallel_lines(table: RunsTable) -> dict[str, Any]:
    """One SVG line per run across the varying hyperparameters and the best ``table.metric``,
    coloured by that best value in eight bands."""
    names = [*table.varying, f"best {table.metric}"]
    columns = [[row.hyperparameters.get(name) for row in table.rows] for name in table.varying]
    best = [number(row.best) for row in table.rows]
    columns.append(best)
    placed, ticks = zip(*(_scaled(column) for column in columns), strict=True) if table.rows else ((), ())
    known = [value for value in best if value is not None]
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    bands: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": [],
            "y": [],
            "text": [],
            "hoverinfo": "text",
            "line": {"color": colour, "width": 1.5},
            "opacity": 0.75,
            "showlegend": False,
        }
        for colour in _BANDS
    ]
    drawn = 0
    for index, row in enumerate(table.rows):
        value = best[index]
        band = (
            0 if value is None or high == low else min(int((value - low) / (high - low) * len(_BANDS)), len(_BANDS) - 1)
        )
        trace = bands[band]
        for axis in range(len(names)):
            trace["x"].append(axis)
            trace["y"].append(placed[axis][index])
            trace["text"].append(f"{row.name or row.run_id[:8]}: {names[axis]} = {_label(columns[axis][index])}")
        trace["x"].append(None)  # a gap: the next run's line starts anew
        trace["y"].append(None)
        trace["text"].append("")
        drawn += 1
    annotations = [
        {"x": i, "y": 1.12, "text": f"<b>{name}</b>", "showarrow": False, "yref": "y"} for i, name in enumerate(names)
    ]
    for axis, axis_ticks in enumerate(ticks):
        annotations += [
            {"x": axis, "y": y, "text": text, "showarrow": False, "xanchor": "left", "xshift": 4, "font": {"size": 10}}
            for y, text in axis_ticks
        ]
    layout = {
        **_LAYOUT,
        "title": {"text": f"hyperparameters → best {table.metric} ({drawn} runs; colour: best {table.metric})"},
        "xaxis": {"visible": False, "range": [-0.3, len(names) - 0.5]},
        "yaxis": {"visible": False, "range": [-0.08, 1.2]},
        "shapes": [
            {"type": "line", "x0": i, "x1": i, "y0": 0, "y1": 1, "line": {"color": "#555", "width": 1}}
            for i in range(len(names))
        ],
        "annotations": annotations,
        "hovermode": "closest",
    }
    return {"data": [band for band in bands if band["x"]], "layout": layout, "runs": drawn}
