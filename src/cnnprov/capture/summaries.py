"""Per-run summaries: what a run's values of each measure have been so far, and its epochs.

A sweep of a thousand runs holds millions of metric values; "which run reached
the best val_acc" should not have to read them all. So each run's graph carries,
per measure (``cnnprov:ofMeasure``), one ``cnnprov:MetricSummary`` node (count, lowest, highest, last,
and their epochs), kept on the writer thread as values are converted and
brought up to date (one SPARQL Update, one transaction, touching only the quads
that changed) at an epoch start once a while has passed since the last update
(``conversion.SUMMARY_INTERVAL_S``), and at every stage end and writer close.
Likewise the run itself carries its epoch counts and times, for listings of runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pyoxigraph import NamedNode, Quad

from cnnprov.rdf.sparql import Pattern, delete_data_operation, delete_operation, insert_operation
from cnnprov.rdf.vocab import CNNPROV, PROV, RDF, child, double_literal, integer_literal


class RunningSummary:
    """One measure's values in one run, folded one at a time."""

    __slots__ = ("count", "low", "low_epoch", "high", "high_epoch", "last", "last_epoch")

    def __init__(self) -> None:
        self.count = 0
        self.low: float | None = None
        self.high: float | None = None
        self.last: float | None = None
        self.low_epoch: int | None = None
        self.high_epoch: int | None = None
        self.last_epoch: int | None = None

    def add(self, value: float, epoch: int | None) -> None:
        """Fold in the next value logged (``epoch``: its ``cnnprov:atEpoch``, if any)."""
        self.count += 1
        self.last, self.last_epoch = value, epoch
        if math.isnan(value):  # a diverged loss is counted and can be last, but is no extreme
            return
        if self.low is None or value < self.low:
            self.low, self.low_epoch = value, epoch
        elif value == self.low and self.low_epoch is None:
            self.low_epoch = epoch
        if self.high is None or value > self.high:
            self.high, self.high_epoch = value, epoch
        elif value == self.high and self.high_epoch is None:
            self.high_epoch = epoch

    def quads(self, node: NamedNode, run: NamedNode, measure: NamedNode, graph: NamedNode) -> list[Quad]:
        quads = [
            Quad(node, RDF.type, PROV.Entity, graph),
            Quad(node, RDF.type, CNNPROV.MetricSummary, graph),
            Quad(node, CNNPROV.summaryOf, run, graph),
            Quad(node, CNNPROV.ofMeasure, measure, graph),
            Quad(node, CNNPROV.valueCount, integer_literal(self.count), graph),
        ]
        for prop, value in (
            (CNNPROV.minValue, self.low),
            (CNNPROV.maxValue, self.high),
            (CNNPROV.lastValue, self.last),
        ):
            if value is not None:
                quads.append(Quad(node, prop, double_literal(value), graph))
        for prop, epoch in (
            (CNNPROV.minEpoch, self.low_epoch),
            (CNNPROV.maxEpoch, self.high_epoch),
            (CNNPROV.lastEpoch, self.last_epoch),
        ):
            if epoch is not None:
                quads.append(Quad(node, prop, integer_literal(epoch), graph))
        return quads


def summary_node(run: NamedNode, measure_name: str) -> NamedNode:
    return child(run, "summary", measure_name)


class StoredSummaries:
    """Writer thread: the summary quads last written for one run, so that a rewrite changes only what changed.

    Each part (a measure's summary, the run's epoch statistics) written for the
    first time replaces whatever the graph holds for it (``DELETE WHERE``: a
    resumed run's summaries were written by an earlier process, and the recorder
    starts a new one of these with each writer); after that, an
    update deletes the quads that changed and inserts their new values
    (``DELETE DATA``, ``INSERT DATA``), a few quads a measure instead of all of
    them: the store's work grows with the quads an update touches.
    """

    def __init__(self, run: NamedNode, graph: NamedNode) -> None:
        self.run, self.graph = run, graph
        self._written: dict[str | None, frozenset[Quad]] = {}

    def update(
        self,
        summaries: dict[str, RunningSummary],
        measures: dict[str, NamedNode],
        names: Iterable[str],
        epoch_statistics: tuple[int, int, float, float | None],
    ) -> str | None:
        """One SPARQL Update for the summaries of measures ``names`` and the epoch statistics.

        ``None`` when nothing changed since the last update.
        """
        run, graph = self.run, self.graph
        statistics = epoch_statistics_quads(run, graph, epoch_statistics)
        parts: list[tuple[str | None, list[Quad], list[Pattern]]] = [
            (None, statistics, [Pattern(run, prop, None, graph) for prop in EPOCH_PROPERTIES])
        ]
        for name in sorted(names):
            node = summary_node(run, name)
            quads = summaries[name].quads(node, run, measures[name], graph)
            parts.append((name, quads, [Pattern(node, None, None, graph)]))
        replaced: list[Pattern] = []
        removed: list[Quad] = []
        added: list[Quad] = []
        for key, quads, patterns in parts:
            current, previous = frozenset(quads), self._written.get(key)
            if previous is None:
                replaced += patterns
                added += quads
            else:
                removed += previous - current
                added += current - previous
            self._written[key] = current
        operations = [delete_operation(pattern) for pattern in replaced]
        if removed:
            operations.append(delete_data_operation(removed))
        if added:
            operations.append(insert_operation(added))
        return " ;\n".join(operations) if operations else None


class EpochStatistics:
    """How many epochs a run started and ended, and how long the ended ones took (training thread)."""

    __slots__ = ("started", "seconds", "total", "slowest")

    def __init__(self, started: int = 0, seconds: dict[int, float] | None = None) -> None:
        self.started = started
        self.seconds: dict[int, float] = dict(seconds or {})
        self.total = sum(self.seconds.values())
        self.slowest = max(self.seconds.values(), default=None)

    def ended(self, index: int, seconds: float) -> None:
        """An epoch ended (again, if an attempt re-ran it: its last duration counts)."""
        previous = self.seconds.get(index)
        self.seconds[index] = seconds
        self.total += seconds - (previous or 0.0)
        if previous is not None and previous == self.slowest:
            self.slowest = max(self.seconds.values())
        elif self.slowest is None or seconds > self.slowest:
            self.slowest = seconds

    def snapshot(self) -> tuple[int, int, float, float | None]:
        return self.started, len(self.seconds), self.total, self.slowest


#: The run's epoch statistics (see :class:`EpochStatistics`).
EPOCH_PROPERTIES = (
    CNNPROV.epochCount, CNNPROV.completedEpochCount, CNNPROV.epochSecondsTotal, CNNPROV.slowestEpochSeconds
)


def epoch_statistics_quads(
    run: NamedNode, graph: NamedNode, snapshot: tuple[int, int, float, float | None]
) -> list[Quad]:
    """The run's epoch counts and times (see :class:`EpochStatistics`) as quads."""
    started, ended, total, slowest = snapshot
    quads = [
        Quad(run, CNNPROV.epochCount, integer_literal(started), graph),
        Quad(run, CNNPROV.completedEpochCount, integer_literal(ended), graph),
        Quad(run, CNNPROV.epochSecondsTotal, double_literal(total), graph),
    ]
    if slowest is not None:
        quads.append(Quad(run, CNNPROV.slowestEpochSeconds, double_literal(slowest), graph))
    return quads
