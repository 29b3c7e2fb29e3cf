"""The writer thread's half of recording: buffered items that are not yet quads become quads.

The training thread buffers cheap tuples (:class:`MetricRow`, :class:`SeriesDue`,
:class:`SummariesDue`, :class:`FileDigest`) and :class:`MetricConverter`, the ``convert`` of the
run's :class:`~cnnprov.storage.writer.QuadWriter`, turns them into quads or a
SPARQL Update on the writer thread, while training goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from pyoxigraph import NamedNode, Quad

from cnnprov.capture.files import file_sha256
from cnnprov.capture.metric_series import OpenSeries, integer, metric_series_node, metric_series_records
from cnnprov.capture.summaries import RunningSummary, StoredSummaries
from cnnprov.rdf.vocab import (
    CNNPROV,
    MLS,
    PROV,
    RDF,
    RDFS,
    child,
    datetime_literal,
    double_literal,
    iri,
    iri_segment,
    string_literal,
)
from cnnprov.storage.write_items import Update

log = logging.getLogger(__name__)


class MetricRow(NamedTuple):
    """One ``log_metrics`` call as buffered on the hot path.

    Made there with ``tuple.__new__(MetricRow, (...))``: a third of the cost of calling the class.
    """

    metrics: Mapping[str, Any]
    step: int | None
    at: float
    generating_epoch: int | None
    per_step: bool  # logged at a training (or evaluation) step: collected into a series


class SeriesDue(NamedTuple):
    """Buffered when an epoch ends (``epoch``, the run's index), and with ``every`` at epoch
    starts and a stage's end: the writer thread writes the step-level series collected for that
    epoch (or all of them) as entities, before the records that follow."""

    epoch: int | None
    every: bool
    at: float


class SummariesDue(NamedTuple):
    """Buffered at epoch starts, stage ends and a writer's close: the writer thread rewrites the
    run's epoch statistics and, at most once per :data:`SUMMARY_INTERVAL_S` unless ``now`` (a
    stage's end, a writer's close), the summaries of measures logged since."""

    epoch_statistics: tuple[int, int, float, float | None]
    now: bool = False


#: Measure summaries are rewritten at an epoch start only once this long (seconds) has passed since
#: this writer's last rewrite of them: rewriting those of five measures deletes and inserts ~50
#: quads, which cost the store as much as an epoch's own records (~2 ms here), so runs of short
#: epochs (a sweep of small models, the stress benchmark) rewrite them a few times a run rather than
#: every epoch. The run's epoch statistics (a few quads) are rewritten at every epoch start. Both
#: are derived data: a stage's end and a writer's close rewrite them whatever the time, and those of
#: a run killed in between are put right from its values by the next writer (``summary_repair``).
SUMMARY_INTERVAL_S = 1.0


class FileDigest(NamedTuple):
    """A checkpoint file whose SHA-256 the writer thread computes."""

    node: NamedNode
    path: str
    graph: NamedNode

    def quads(self) -> list[Quad]:
        try:
            digest = file_sha256(self.path)
        except OSError:  # removed before it could be read: size and path are recorded
            return []
        return [Quad(self.node, CNNPROV.sha256, string_literal(digest), self.graph)]


class MetricTerms:
    """The terms a run's metric values repeat, made once and reused (writer thread)."""

    def __init__(self, run: NamedNode, base: str) -> None:
        self.run = run
        self.base = base
        self.value_prefix = child(run, "value", "").value  # "…/value/": the counter, a decimal, follows
        self.generators: dict[int | None, NamedNode] = {None: run}
        self.measures: dict[str, NamedNode] = {}

    def measure(self, name: str) -> NamedNode:
        node = self.measures.get(name)
        if node is None:
            node = self.measures[name] = iri(self.base, "measure", iri_segment(name))
        return node

    def generator(self, epoch: int | None) -> NamedNode:
        node = self.generators.get(epoch)
        if node is None:
            node = self.generators[epoch] = child(self.run, "epoch", str(epoch))
        return node


class MetricConverter:
    """Writer thread: a run's buffered items → quads; the ``convert`` each of its writers gets.

    Its state (values numbered so far, measures described, each measure's
    running summary, the summaries last written) belongs to the writer thread:
    it changes only while an item converts. The recorder, on the training
    thread, touches it through two calls alone, each made while no item is
    waiting to convert (a writer converts only what is buffered, and the last
    writer was flushed when it closed):

    * :meth:`continue_run`, as a stored run is continued, to number values after its own;
    * :meth:`new_writer`, each time the recorder makes a new writer, to say which
      run it writes and that its first summary update replaces them whole.
    """

    def __init__(self, run: NamedNode, bundle: NamedNode, base: str, step_values: str = "series") -> None:
        self.run, self.bundle, self.base = run, bundle, base
        self._series_of_steps = step_values == "series"  # else each step-level value is an entity
        self._series = OpenSeries()
        self._metric_count = 0
        self._measures: set[str] = set()  # described in the run's graph already
        self._warned: set[str] = set()  # measures (and "step", "epoch") whose unrecordable values were reported
        self._summaries: dict[str, RunningSummary] = {}
        self._changed_summaries: set[str] = set()
        self._stored_summaries: StoredSummaries | None = None  # what this writer's updates wrote last
        self._summaries_at = time.monotonic()  # when this writer's summaries were last rewritten
        self._terms: MetricTerms | None = None

    # -- training thread, before items convert ---------------------------
    def new_writer(self, run: NamedNode, bundle: NamedNode) -> None:
        """A new writer converts for ``run`` (a resumed run may have taken another IRI).

        What the last writer believed it wrote may not have reached the store
        (its failed writes are dropped with it), so summaries are replaced whole once more.
        """
        self.run, self.bundle = run, bundle
        self._stored_summaries = None
        self._summaries_at = time.monotonic()

    def continue_run(self, values: int, series: int, summaries: Mapping[str, RunningSummary]) -> None:
        """Continue a stored run: ``values`` and ``series`` numbered already, each measure's summary so far."""
        self._metric_count = values
        self._series.written = series
        self._summaries.update(summaries)

    # -- writer thread -----------------------------------------------------
    def __call__(self, item: Any) -> list[Quad] | Update:
        """A buffered item that is not yet quads → quads (or one summary update)."""
        if isinstance(item, FileDigest):
            return item.quads()
        if isinstance(item, SummariesDue):
            return self._summary_update(item)
        if isinstance(item, SeriesDue):
            return self._series_quads(item)
        return self._metric_quads(item)

    def _series_quads(self, due: SeriesDue) -> list[Quad]:
        """The series of an epoch that ended (or of every epoch) as entities."""
        taken = self._series.due(due.epoch, due.every)
        if not taken:
            return []
        terms = self._metric_terms()
        graph, at = self.bundle, due.at
        quads: list[Quad] = []
        for number, (generating, epoch, name), points in taken:
            measure = terms.measure(name)
            quads += self._measure_description(name, measure)
            node = metric_series_node(self.run, number)
            triples = metric_series_records(node, points, terms.generator(generating), at, measure, integer(epoch))
            quads += (Quad(*triple, graph) for triple in triples)
        return quads

    def _measure_description(self, name: str, measure: NamedNode) -> list[Quad]:
        """The measure's types and label, the first time the run's graph meets it."""
        if name in self._measures:
            return []
        self._measures.add(name)
        graph = self.bundle
        return [
            Quad(measure, RDF.type, PROV.Entity, graph),
            Quad(measure, RDF.type, MLS.EvaluationMeasure, graph),
            Quad(measure, RDFS.label, string_literal(name), graph),
        ]

    def _summary_update(self, due: SummariesDue) -> Update | list[Quad]:
        """One update for the run's epoch statistics and the summaries that changed; those of
        measures only if ``now`` or :data:`SUMMARY_INTERVAL_S` after this writer's last."""
        stored = self._stored_summaries
        if stored is None:  # the first update of this writer (see new_writer)
            stored = self._stored_summaries = StoredSummaries(self.run, self.bundle)
        now = time.monotonic()
        changed: set[str] | tuple[()] = self._changed_summaries
        if due.now or now - self._summaries_at >= SUMMARY_INTERVAL_S:
            self._summaries_at = now
        else:
            changed = ()  # the measures changed stay marked: the next rewrite takes them
        terms = self._metric_terms()
        measures = {name: terms.measure(name) for name in changed}
        sparql = stored.update(self._summaries, measures, changed, due.epoch_statistics)
        self._changed_summaries.difference_update(changed)
        return Update(sparql) if sparql else []

    def _index(self, value: Any, what: str, step: Any, metrics: Mapping[str, Any]) -> int | None:
        """A step or epoch as an integer; ``None`` (left out, with one warning) when it is none."""
        number = _as_float(value)
        if number is not None and number.is_integer():
            return int(number)
        if what not in self._warned:
            self._warned.add(what)
            log.warning(
                "cnnprov cannot record %s %r (logged with %s) as a whole number: the values are recorded "
                "without it (said once per run)", what, value, ", ".join(sorted(map(_text, metrics))) or "no values",
            )
        return None

    def _skip(self, name: str, step: Any, value: Any, key: bool = False) -> None:
        """A value that is no number is left out (a name that is no text recorded as a placeholder),
        with one warning per measure."""
        if name in self._warned:
            return
        self._warned.add(name)
        if key:
            log.warning("cnnprov cannot record a metric's name as text: its values are recorded as %r", name)
            return
        log.warning(
            "cnnprov cannot record %r = %r at step %s: it is not a number (or too large for one); "
            "its values that are not numbers are left out (said once per measure)", name, value, step,
        )

    def _metric_terms(self) -> MetricTerms:
        terms = self._terms
        if terms is None or terms.run != self.run:  # first value, or a resumed run took another IRI
            terms = self._terms = MetricTerms(self.run, self.base)
        return terms

    def _metric_quads(self, row: MetricRow) -> list[Quad]:
        """One buffered ``log_metrics`` call → quads.

        Each epoch-level value: its two types, measure, value, time, generating activity,
        step and epoch (the plain generation says all there is: no qualified form).
        A step-level value (``per_step``, with a step) joins its epoch's series instead.
        The nodes every value repeats are made once per run (building terms is
        most of the Python work here, and it holds the GIL).
        """
        metrics, step, when, generating_epoch, per_step = row
        step_number = self._index(step, "step", step, metrics) if step is not None else None
        epoch_value = metrics.get("epoch")
        epoch_number = self._index(epoch_value, "epoch", step, metrics) if epoch_value is not None else None
        if per_step and step_number is not None and self._series_of_steps:
            # points of series: no term is built for them here (a few µs a value, all holding the GIL)
            for name, number in self._numbers(metrics, step, epoch_number):
                self._series.add((generating_epoch, epoch_number, name), step_number, number, when)
            return []
        terms = self._metric_terms()
        graph = self.bundle
        at = datetime_literal(when)
        generator = terms.generator(generating_epoch)
        at_step, at_epoch = integer(step_number), integer(epoch_number)
        entity, evaluation, rdf_type = PROV.Entity, MLS.ModelEvaluation, RDF.type
        quads: list[Quad] = []
        for name, number in self._numbers(metrics, step, epoch_number):
            measure = terms.measure(name)
            if name not in self._measures:  # described once in the run's graph
                quads += self._measure_description(name, measure)
            self._metric_count += 1
            node = NamedNode(f"{terms.value_prefix}{self._metric_count}")
            quads += (
                Quad(node, rdf_type, entity, graph),
                Quad(node, rdf_type, evaluation, graph),
                Quad(node, MLS.specifiedBy, measure, graph),
                Quad(node, MLS.hasValue, double_literal(number), graph),
                Quad(node, PROV.generatedAtTime, at, graph),
                Quad(node, PROV.wasGeneratedBy, generator, graph),
            )
            if at_step is not None:
                quads.append(Quad(node, CNNPROV.atStep, at_step, graph))
            if at_epoch is not None:
                quads.append(Quad(node, CNNPROV.atEpoch, at_epoch, graph))
        return quads

    def _numbers(self, metrics: Mapping[str, Any], step: Any, epoch: int | None) -> Iterator[tuple[str, float]]:
        """Each metric's name (as text) and value (as a float), folded into its measure's summary;
        but the ``epoch`` key and values that are no number (left out, said once per measure)."""
        summaries, changed = self._summaries, self._changed_summaries
        for name, value in metrics.items():
            if name == "epoch":
                continue
            number = _as_float(value)
            text = _text(name)
            if text is not name and not isinstance(name, str) and text.startswith("<unprintable"):
                self._skip(text, step, "its name", key=True)
            name = text
            if number is None:
                self._skip(name, step, value)
                continue
            summary = summaries.get(name)
            if summary is None:
                summary = summaries[name] = RunningSummary()
            summary.add(number, epoch)
            changed.add(name)
            yield name, number


def _as_float(value: Any) -> float | None:
    """The value as a float (NaN and infinities included), or ``None`` when it is no number."""
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except Exception:  # a string, a tensor of many values, an int too large for a float, a broken __float__
        return None


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a key whose __str__ raises: still one name per key
        return f"<unprintable {type(value).__qualname__}>"
