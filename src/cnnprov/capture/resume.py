"""What a store already holds about a run, so that a later process can continue it.

A training run interrupted by a crash, ``kill -9`` or Ctrl+C is resumed with
``trainer.fit(model, ckpt_path=...)``. The store knows every checkpoint's
SHA-256, so the checkpoint file names the run that wrote it; this module finds
that run and reads where its numbering stopped (epochs, metric values,
checkpoints, learning-rate series, attempts), so that
:class:`~cnnprov.capture.recorder.RunRecorder` continues the same record instead of
starting a new one. It only reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyoxigraph import Literal, NamedNode, Variable

from cnnprov.capture.nodes import checkpoint_node
from cnnprov.capture.summaries import RunningSummary
from cnnprov.rdf.points import unpack_points
from cnnprov.rdf.vocab import CNNPROV, CNNPROV_NS, MLS, MLS_NS, PROV, PROV_NS, RDF, RDFS, child, python_value
from cnnprov.storage.protocols import ReadStore


@dataclass
class RecordedRun:
    """Where the stored record of a run stops.

    Counts are the highest number used in the run's IRIs (``…/value-{n}``, or
    ``…/value/{n}`` in a run an earlier version recorded), so a continuation mints
    the next ones without colliding.
    """

    run: NamedNode
    bundle: NamedNode
    run_id: str
    name: str | None
    started_at: float | None
    epochs: dict[int, float] = field(default_factory=dict)
    checkpoints: int = 0
    latest_checkpoint: NamedNode | None = None
    values: int = 0
    series: int = 0
    learning_rate_series: int = 0
    attempts: int = 0
    optimizers: dict[int, NamedNode] = field(default_factory=dict)
    learning_rates: dict[tuple[int, int], tuple[NamedNode, float]] = field(default_factory=dict)
    summaries: dict[str, RunningSummary] = field(default_factory=dict)
    epoch_seconds: dict[int, float] = field(default_factory=dict)


def find_checkpoint(store: ReadStore, sha256: str) -> tuple[NamedNode, NamedNode, NamedNode] | None:
    """The checkpoint a run generated with this SHA-256: ``(checkpoint, run, bundle)``, or ``None``.

    When several runs generated the same file, the latest one wins.
    """
    rows = list(
        store.query(
            f"""SELECT ?checkpoint ?run ?g ?sha WHERE {{ GRAPH ?g {{
                  ?checkpoint a <{CNNPROV_NS}Checkpoint> ; <{CNNPROV_NS}sha256> ?sha ;
                              <{PROV_NS}generatedAtTime> ?at ; <{PROV_NS}wasGeneratedBy> ?activity .
                  ?g <{CNNPROV_NS}describesRun> ?run . }} }}
                ORDER BY DESC(?at) LIMIT 1""",
            substitutions={Variable("sha"): Literal(sha256)},
        )
    )
    if not rows:
        return None
    return rows[0]["checkpoint"], rows[0]["run"], rows[0]["g"]


def find_run(store: ReadStore, run_id: str) -> tuple[NamedNode, NamedNode] | None:
    """The run stored under ``run_id`` and the bundle that describes it: ``(run, bundle)``, or ``None``."""
    rows = list(
        store.query(
            f"""SELECT ?run ?g ?id WHERE {{ GRAPH ?g {{
                  ?g <{CNNPROV_NS}describesRun> ?run . ?run <{CNNPROV_NS}runId> ?id }} }} ORDER BY ?g LIMIT 1""",
            substitutions={Variable("id"): Literal(run_id)},
        )
    )
    return (rows[0]["run"], rows[0]["g"]) if rows else None


def read_run(store: ReadStore, run: NamedNode, bundle: NamedNode) -> RecordedRun | None:
    """The stored record of ``run`` in graph ``bundle``, or ``None`` if the store has none."""
    run_id = _one(store, run, CNNPROV.runId, bundle)
    if run_id is None:
        return None
    started = _one(store, run, PROV.startedAtTime, bundle)
    record = RecordedRun(
        run=run,
        bundle=bundle,
        run_id=str(run_id),
        name=_one(store, run, RDFS.label, bundle),
        started_at=started.timestamp() if started is not None else None,
    )
    record.epochs, record.epoch_seconds = read_epochs(store, run, bundle)
    # the prefixes the run's own IRIs have (child() mints in the shape of the run's IRI)
    record.values = _highest(store, bundle, MLS.ModelEvaluation, _prefix(run, "value"))
    record.series = _highest(store, bundle, CNNPROV.MetricSeries, _prefix(run, "series"))
    record.checkpoints = _highest(store, bundle, CNNPROV.Checkpoint, _prefix(run, "checkpoint"))
    if record.checkpoints:
        record.latest_checkpoint = checkpoint_node(run, record.checkpoints)
    record.learning_rate_series = _highest(store, bundle, CNNPROV.LearningRateSeries, _prefix(run, "learning-rates"))
    record.attempts = _highest(store, bundle, CNNPROV.Attempt, _prefix(run, "attempt"))
    optimizer_prefix = _prefix(run, "optimizer")
    for quad in store.quads_for_pattern(None, RDF.type, CNNPROV.Optimizer, bundle):
        subject = quad.subject
        index = _suffix_number(subject.value, optimizer_prefix) if isinstance(subject, NamedNode) else None
        if index is not None and isinstance(subject, NamedNode):
            record.optimizers[index] = subject
    _read_learning_rates(store, record)
    record.summaries = fold_values(store, run, bundle)
    return record


def read_epochs(store: ReadStore, run: NamedNode, bundle: NamedNode) -> tuple[dict[int, float], dict[int, float]]:
    """The stored epochs of ``run``: each index's first start (POSIX seconds), and the durations of
    those that ended."""
    starts: dict[int, float] = {}
    seconds: dict[int, float] = {}
    for row in store.query(
        f"""SELECT ?g ?run ?index (MIN(?start) AS ?first) (MAX(?duration) AS ?seconds) WHERE {{ GRAPH ?g {{
              ?epoch <{CNNPROV_NS}partOfRun> ?run ; <{CNNPROV_NS}epochIndex> ?index ;
                     <{PROV_NS}startedAtTime> ?start .
              OPTIONAL {{ ?epoch <{CNNPROV_NS}durationSeconds> ?duration }} }} }} GROUP BY ?g ?run ?index""",
        substitutions={Variable("g"): bundle, Variable("run"): run},
    ):
        index = python_value(row["index"])
        starts[index] = python_value(row["first"]).timestamp()
        if row["seconds"] is not None:  # it ended
            seconds[index] = python_value(row["seconds"])
    return starts, seconds


def fold_values(store: ReadStore, run: NamedNode, bundle: NamedNode) -> dict[str, RunningSummary]:
    """Each measure's summary, from every value stored (those of an interrupted epoch too, and the
    points of its step-level series), in logging order."""
    prefix = _prefix(run, "value")
    values: list[tuple[float, int, int, str, float, int | None]] = []
    for row in store.query(
        f"""SELECT ?g ?value_node ?name ?value ?epoch ?at WHERE {{ GRAPH ?g {{
              ?value_node <{MLS_NS}specifiedBy> ?measure ; <{MLS_NS}hasValue> ?value .
              ?measure <http://www.w3.org/2000/01/rdf-schema#label> ?name .
              OPTIONAL {{ ?value_node <{PROV_NS}generatedAtTime> ?at }}
              OPTIONAL {{ ?value_node <{CNNPROV_NS}atEpoch> ?epoch }} }} }}""",
        substitutions={Variable("g"): bundle},
    ):
        number = _suffix_number(row["value_node"].value, prefix)
        if number is None:
            continue
        epoch, at = row["epoch"], row["at"]
        when = python_value(at).timestamp() if at is not None else 0.0
        index = int(epoch.value) if epoch else None
        values.append((when, number, 0, row["name"].value, float(row["value"].value), index))
    series_prefix = _prefix(run, "series")
    for row in store.query(
        f"""SELECT ?g ?series ?name ?points ?epoch WHERE {{ GRAPH ?g {{
              ?series a <{CNNPROV_NS}MetricSeries> ; <{MLS_NS}specifiedBy> ?measure ;
                      <{CNNPROV_NS}seriesPoints> ?points .
              ?measure <http://www.w3.org/2000/01/rdf-schema#label> ?name .
              OPTIONAL {{ ?series <{CNNPROV_NS}atEpoch> ?epoch }} }} }}""",
        substitutions={Variable("g"): bundle},
    ):
        number = _suffix_number(row["series"].value, series_prefix)
        if number is None:
            continue
        epoch = int(row["epoch"].value) if row["epoch"] is not None else None
        name = row["name"].value
        for index, point in enumerate(unpack_points(row["points"])):
            values.append((point.time or 0.0, number, index + 1, name, point.value, epoch))
    summaries: dict[str, RunningSummary] = {}
    for _, _, _, name, value, epoch in sorted(values, key=lambda value: value[:3]):
        summaries.setdefault(name, RunningSummary()).add(value, epoch)
    return summaries


def _read_learning_rates(store: ReadStore, record: RecordedRun) -> None:
    """Each parameter group's latest rate: its last series' last value, or its lr setting's
    value when no series derives from it (a learning-rate adaptation's setting, in a store
    written before series)."""
    for row in store.query(
        f"""SELECT ?g ?group ?latest ?value WHERE {{ GRAPH ?g {{
              ?setting <{CNNPROV_NS}settingOf> ?group ; <{MLS_NS}specifiedBy> ?parameter .
              ?parameter <http://www.w3.org/2000/01/rdf-schema#label> "optimizer.lr" .
              {{ ?setting <{MLS_NS}hasValue> ?value . BIND(?setting AS ?latest) }}
              UNION {{ ?latest <{CNNPROV_NS}seriesOf> ?setting ; <{CNNPROV_NS}seriesLast> ?value }}
              FILTER NOT EXISTS {{ ?later <{PROV_NS}wasDerivedFrom> ?latest }} }} }}""",
        substitutions={Variable("g"): record.bundle},
    ):
        group = row["group"].value
        for optimizer_index, optimizer in record.optimizers.items():
            group_index = _suffix_number(group, _prefix(optimizer, "group"))
            value = python_value(row["value"])
            if group_index is not None and isinstance(value, (int, float)):
                record.learning_rates[(optimizer_index, group_index)] = (row["latest"], float(value))


def _one(store: ReadStore, subject: NamedNode, predicate: NamedNode, graph: NamedNode) -> Any:
    for quad in store.quads_for_pattern(subject, predicate, None, graph):
        return python_value(quad.object)
    return None


def _highest(store: ReadStore, graph: NamedNode, cls: NamedNode, prefix: str) -> int:
    """The highest ``n`` among the IRIs ``{prefix}{n}`` of instances of ``cls`` in ``graph``."""
    highest = 0
    for quad in store.quads_for_pattern(None, RDF.type, cls, graph):
        if not isinstance(quad.subject, NamedNode):
            continue
        number = _suffix_number(quad.subject.value, prefix)
        if number is not None and number > highest:
            highest = number
    return highest


def _prefix(node: NamedNode, kind: str) -> str:
    """What the IRIs of ``node``'s numbered ``kind`` parts start with: ``…/value-`` (``…/value/`` in an
    earlier version's run)."""
    return child(node, kind, "").value


def _suffix_number(iri: str, prefix: str) -> int | None:
    if not iri.startswith(prefix):
        return None
    rest = iri[len(prefix) :]
    return int(rest) if rest.isdigit() else None
