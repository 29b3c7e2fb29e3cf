"""Query results as a text table, CSV or JSON, for the terminal and for other programs."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import shutil
from typing import Any

from cnnprov.analysis.provstore import QueryResult

FORMATS = ("table", "csv", "json")


def render(result: QueryResult, fmt: str = "table") -> str:
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return to_json(result)
    return to_table(result)


def to_json(result: QueryResult) -> str:
    """A list of objects, one per row; datetimes in ISO 8601; the numbers JSON has no literal for
    as the strings ``"Infinity"``, ``"-Infinity"`` and ``"NaN"`` (what JavaScript's ``Number()``
    and Python's ``float()`` read back), not as null, which would say the value is missing."""
    rows = [{k: json_value(v) for k, v in row.items()} for row in result.to_dicts()]
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


def to_csv(result: QueryResult) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else _text(v, full=True) for v in row])
    return out.getvalue()


def to_table(result: QueryResult, max_width: int | None = None) -> str:
    """Aligned columns that fit the terminal; long cells are cut with an ellipsis."""
    if not result.rows:
        return "(no results)\n"
    width = max_width or shutil.get_terminal_size((120, 24)).columns
    cells = [[_text(v) for v in row] for row in result.rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(result.columns)]
    budget = max(width - 2 * (len(widths) - 1), 20)
    # Ids are copied into other commands, so they are never cut.
    shrinkable = [i for i, c in enumerate(result.columns) if not (c == "id" or c.endswith("_id"))]
    while shrinkable and sum(widths) > budget:
        widest = max(shrinkable, key=lambda i: widths[i])
        if widths[widest] <= 12:
            break
        widths[widest] -= 1
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in result.rows) for i in range(len(widths))
    ]

    def line(values: list[str]) -> str:
        parts = []
        for value, w, right in zip(values, widths, numeric, strict=False):
            value = value if len(value) <= w else value[: w - 1] + "…"
            parts.append(value.rjust(w) if right else value.ljust(w))
        return "  ".join(parts).rstrip()

    lines = [line(result.columns), line(["-" * w for w in widths])]
    lines.extend(line(row) for row in cells)
    return "\n".join(lines) + "\n"


def _text(value: Any, full: bool = False) -> str:
    if value is None:
        return "" if full else "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if full else f"{value:.4g}"
    if isinstance(value, dt.datetime):
        return value.isoformat() if full else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def json_value(value: Any) -> Any:
    """A query's value as JSON holds it: datetimes in ISO 8601, non-finite numbers as strings."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value
