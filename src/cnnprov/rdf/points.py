"""Unpack a ``cnnprov:Series``: the points its ``cnnprov:seriesPoints`` literal holds.

:mod:`cnnprov.capture.series` writes a series of step-level values as one entity whose
points are one ``cnnprov:pointsJSON`` literal (a JSON array of ``[step, value]`` or
``[step, value, time]``); this module reads such a literal back to Python values.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

from cnnprov.errors import CnnprovError

_SPECIAL = {"NaN": math.nan, "INF": math.inf, "+INF": math.inf, "-INF": -math.inf}


class Point(NamedTuple):
    """One point of a series: the optimizer step, the value, and the time (POSIX seconds) if kept."""

    step: int
    value: float
    time: float | None = None


class MalformedSeriesError(CnnprovError, ValueError):
    """A ``cnnprov:pointsJSON`` literal that is not the documented form."""


def unpack_points(term: Any) -> list[Point]:
    """The points of a ``cnnprov:pointsJSON`` literal (an RDF literal or its lexical form), in step order."""
    text = getattr(term, "value", term)
    try:
        raw = json.loads(text)
        points = [_point(item) for item in raw]
    except (TypeError, ValueError, KeyError, IndexError) as error:
        raise MalformedSeriesError(f"not a cnnprov:pointsJSON literal: {str(text)[:80]!r}") from error
    return points


def _point(item: list[Any]) -> Point:
    step, value = item[0], item[1]
    if not isinstance(step, int):
        raise TypeError("a step is an integer")
    number = _SPECIAL[value] if isinstance(value, str) else float(value)
    time = float(item[2]) if len(item) > 2 and item[2] is not None else None
    return Point(step, number, time)
