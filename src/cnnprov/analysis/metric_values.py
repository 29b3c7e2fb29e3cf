"""Every metric value of a run, step-level series unpacked: the rows a CSV logger would have written.

Epoch-level values (``val_loss``, ``train_loss_epoch``, test values) are one
``mls:ModelEvaluation`` each; step-level values (``train_loss_step``) are the points of one
``cnnprov:MetricSeries`` per epoch and measure (:mod:`cnnprov.capture.metric_series`), or
entities too in stores written with ``step_values="entities"`` and by cnnprov 0.1.0. This
module reads both into one table, ordered by step and logging time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyoxigraph import Literal, Variable

from cnnprov.rdf.points import unpack_points
from cnnprov.rdf.vocab import python_value

if TYPE_CHECKING:
    from cnnprov.analysis.provstore import ProvStore, QueryResult

COLUMNS = ("metric", "epoch", "step", "value", "time", "level")

_VALUES = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX mls: <http://www.w3.org/ns/mls#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
SELECT ?metric ?epoch ?step ?value ?at ?points ?g WHERE {
  GRAPH ?g {
    ?measure a mls:EvaluationMeasure ; rdfs:label ?metric .
    {
      ?entity a mls:ModelEvaluation ; mls:specifiedBy ?measure ; mls:hasValue ?value .
      OPTIONAL { ?entity prov:generatedAtTime ?at }
      OPTIONAL { ?entity cnnprov:atStep ?step }
      OPTIONAL { ?entity prov:wasGeneratedBy/cnnprov:epochIndex ?epoch }
    } UNION {
      ?entity a cnnprov:MetricSeries ; mls:specifiedBy ?measure ; cnnprov:seriesPoints ?points .
      OPTIONAL { ?entity prov:wasGeneratedBy/cnnprov:epochIndex ?epoch }
    }
  }
}
"""


def metric_values(store: ProvStore, run: str, metric: str | None = None) -> QueryResult:
    """One row per value logged in ``run`` (an id, or the start of one): ``metric``, ``epoch``
    (the index of the epoch that generated it; empty for a test stage's), ``step``, ``value``,
    ``time`` (POSIX seconds; to the millisecond for step-level values) and ``level``
    (``"step"`` for a point of a series, ``"epoch"`` for an entity), ordered by step, then time.
    ``metric`` keeps one measure's values.
    """
    from cnnprov.analysis.provstore import QueryResult

    substitutions: dict[Variable, Any] = {}
    with store.reading() as reader:
        substitutions[Variable("g")] = store._bundle(reader, store._resolve_run(reader, run))
        if metric is not None:
            substitutions[Variable("metric")] = Literal(metric)
        solutions = list(reader.query(_VALUES, substitutions=substitutions))
    rows: list[tuple[Any, ...]] = []
    for row in solutions:
        name = python_value(row["metric"])
        epoch = python_value(row["epoch"]) if row["epoch"] is not None else None
        if row["points"] is not None:
            rows += [(name, epoch, p.step, p.value, p.time, "step") for p in unpack_points(row["points"])]
            continue
        at = row["at"]
        step = python_value(row["step"]) if row["step"] is not None else None
        when = python_value(at).timestamp() if at is not None else None
        rows.append((name, epoch, step, python_value(row["value"]), when, "epoch"))
    rows.sort(key=lambda r: (r[2] is None, r[2] if r[2] is not None else 0, r[4] or 0.0, r[0]))
    return QueryResult(list(COLUMNS), rows)
