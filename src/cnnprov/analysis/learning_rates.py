"""The learning rate of every optimizer parameter group of a run, step by step, from its record.

A run's record holds each group's ``lr`` setting (the rate it started with) and, for each
epoch in which a rate changed, a ``cnnprov:LearningRateSeries`` whose points are the
steps at which it changed and the rate from then on (:mod:`cnnprov.rdf.points`
unpacks them). :func:`learning_rates` turns these into one table; :func:`rate_at` reads
the rate a step used from it. Stores written before series (with
``cnnprov:LearningRateAdaptation`` activities) are read too.
"""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING, Any

from pyoxigraph import Variable

from cnnprov.rdf.points import unpack_points
from cnnprov.rdf.vocab import CNNPROV_NS, MLS_NS, PROV_NS, python_value

if TYPE_CHECKING:
    from cnnprov.analysis.provstore import ProvStore, QueryResult

COLUMNS = ["optimizer", "group", "epoch", "step", "lr"]
_Change = tuple[Any, Any, Any]  # epoch, step (None: from the start), rate

_RATES = f"""SELECT ?g ?group ?start ?series ?points ?written ?epoch ?step ?value WHERE {{ GRAPH ?g {{
  ?setting <{CNNPROV_NS}settingOf> ?group ; <{MLS_NS}specifiedBy> ?parameter .
  ?parameter <http://www.w3.org/2000/01/rdf-schema#label> "optimizer.lr" .
  {{ ?setting <{MLS_NS}hasValue> ?start FILTER NOT EXISTS {{ ?setting <{PROV_NS}wasDerivedFrom> ?earlier }} }}
  UNION {{ ?series <{CNNPROV_NS}seriesOf> ?setting ; <{CNNPROV_NS}seriesPoints> ?points ;
                   <{PROV_NS}generatedAtTime> ?written ; <{PROV_NS}wasGeneratedBy> ?generator .
           OPTIONAL {{ ?generator <{CNNPROV_NS}epochIndex> ?epoch }} }}
  UNION {{ ?setting <{PROV_NS}wasDerivedFrom> ?earlier ; <{MLS_NS}hasValue> ?value ;
                    <{PROV_NS}generatedAtTime> ?written .
           OPTIONAL {{ ?setting <{CNNPROV_NS}atEpoch> ?epoch }} OPTIONAL {{ ?setting <{CNNPROV_NS}atStep> ?step }} }}
}} }}"""


def learning_rates(store: ProvStore, run: str) -> QueryResult:
    """One row per parameter group and rate: ``optimizer``, ``group``, ``epoch``, ``step``, ``lr``.

    Each group's first row is the rate it started with (``epoch`` and ``step`` empty); each
    further row a change, the rate every optimizer step from ``step`` on used, until the
    next row of that group. ``run`` is a run id or the start of one. When a resumed attempt
    trained steps again, its rates replace the earlier attempt's from its first change on.
    """
    from cnnprov.analysis.provstore import QueryResult

    with store.reading() as reader:
        bundle = store._bundle(reader, store._resolve_run(reader, run))
        rows = list(reader.query(_RATES, substitutions={Variable("g"): bundle}))
    starts: dict[tuple[int, int], float] = {}
    changes: dict[tuple[int, int], list[tuple[Any, list[_Change]]]] = {}
    for row in rows:
        key = _group_key(row["group"].value)
        if key is None:
            continue
        if row["start"] is not None:
            starts[key] = python_value(row["start"])
            continue
        epoch = python_value(row["epoch"])
        if row["points"] is not None:
            points: list[_Change] = [(epoch, point.step, point.value) for point in unpack_points(row["points"])]
        else:  # a learning-rate adaptation's setting
            points = [(epoch, python_value(row["step"]), python_value(row["value"]))]
        changes.setdefault(key, []).append((python_value(row["written"]), points))
    table: list[tuple] = []
    for key in sorted(starts.keys() | changes.keys()):
        table.append((*key, None, None, starts.get(key)))
        kept: list[_Change] = []
        for _, points in sorted(changes.get(key, []), key=lambda change: change[0]):
            first = points[0][1]
            if first is not None:  # a later attempt's rates replace what it trained again
                kept = [point for point in kept if point[1] is None or point[1] < first]
            kept += points
        kept.sort(key=lambda point: -1 if point[1] is None else point[1])
        table += [(*key, *point) for point in kept]
    return QueryResult(list(COLUMNS), table)


def rate_at(table: QueryResult, step: int, optimizer: int = 0, group: int = 0) -> float | None:
    """The rate the group's optimizer step ``step`` used, by the rows of :func:`learning_rates`."""
    rows = [row for row in table.rows if row[0] == optimizer and row[1] == group]
    if not rows:
        return None
    steps = [-1 if row[3] is None else row[3] for row in rows]
    return rows[bisect.bisect_right(steps, step) - 1][4]


def _group_key(iri: str) -> tuple[int, int] | None:
    """(optimizer, group) of a parameter group's IRI ``…/optimizer-{i}/group-{j}`` (``…/optimizer/{i}/group/{j}``
    in a run an earlier version recorded)."""
    found = _GROUP_IRI.search(iri)
    return (int(found.group(1)), int(found.group(2))) if found else None


_GROUP_IRI = re.compile(r"/optimizer[-/]([0-9]+)/group[-/]([0-9]+)\Z")
