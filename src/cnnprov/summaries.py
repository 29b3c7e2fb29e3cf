"""Per-run summaries: what a run's values of each measure have been so far, and its epochs.

A sweep of a thousand runs holds millions of metric values; "which run reached
the best val_acc" should not have to read them all. So each run's graph carries,
per measure (``cnnprov:ofMeasure``), one ``cnnprov:MetricSummary`` node (count, lowest, highest, last,
and their epochs), kept on the writer thread as values are converted and
rewritten (one SPARQL Update, one transaction) at every epoch start and stage end.
Likewise the run itself carries its epoch counts and times, for listings of runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pyoxigraph import NamedNode, Quad

from .remote import Pattern, delete_operation, insert_operation
from .vocab import CNNPROV, PROV, RDF, child, double_literal, integer_literal


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
        for prop, value, term in (
            (CNNPROV.minValue, self.low, double_literal),
            (CNNPROV.maxValue, self.high, double_literal),
            (CNNPROV.lastValue, self.last, double_literal),
            (CNNPROV.minEpoch, self.low_epoch, integer_literal),
            (CNNPROV.maxEpoch, self.high_epoch, integer_literal),
            (CNNPROV.lastEpoch, self.last_epoch, integer_literal),
        ):
            if value is not None:
                quads.append(Quad(node, prop, term(value), graph))
        return quads


def summary_node(run: NamedNode, measure_name: str) -> NamedNode:
    return child(run, "summary", measure_name)


def summary_update(
    run: NamedNode,
    graph: NamedNode,
    summaries: dict[str, RunningSummary],
    measures: dict[str, NamedNode],
    names: Iterable[str],
) -> str:
    """One SPARQL Update that replaces the summaries of measures ``names`` in the run's graph."""
    deletes, quads = [], []
    for name in sorted(names):
        node = summary_node(run, name)
        deletes.append(delete_operation(Pattern((node, None, None, graph))))
        quads += summaries[name].quads(node, run, measures[name], graph)
    return " ;\n".join([*deletes, insert_operation(quads)])


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


def epoch_statistics_update(run: NamedNode, graph: NamedNode, snapshot: tuple[int, int, float, float | None]) -> str:
    """One SPARQL Update that replaces the run's epoch counts and times (see :class:`EpochStatistics`)."""
    started, ended, total, slowest = snapshot
    props = (CNNPROV.epochCount, CNNPROV.completedEpochCount, CNNPROV.epochSecondsTotal, CNNPROV.slowestEpochSeconds)
    deletes = [delete_operation(Pattern((run, prop, None, graph))) for prop in props]
    quads = [
        Quad(run, CNNPROV.epochCount, integer_literal(started), graph),
        Quad(run, CNNPROV.completedEpochCount, integer_literal(ended), graph),
        Quad(run, CNNPROV.epochSecondsTotal, double_literal(total), graph),
    ]
    if slowest is not None:
        quads.append(Quad(run, CNNPROV.slowestEpochSeconds, double_literal(slowest), graph))
    return " ;\n".join([*deletes, insert_operation(quads)])
