"""The learning-rate history of a run as records: one series per epoch and parameter group.

A rate that changes at every step (OneCycleLR, a warm-up) costs one entity an epoch, not
one activity and setting a change: the steps at which the rate of a parameter group
changed, and the rate from that step on, are the points of a ``cnnprov:LearningRateSeries``
(:mod:`cnnprov.capture.series`) that the epoch generated. It is of (``cnnprov:seriesOf``) the
group's ``lr`` setting, the rate the group started with, and derives from the group's
previous series (or from that setting), so the chain reads as the rate's history.
An epoch in which no rate changed writes nothing.
"""

from __future__ import annotations

from pyoxigraph import NamedNode

from cnnprov.capture.series import PointSeries, series_records
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import CNNPROV, PROV, RDF, RDFS, child, double_literal, integer_literal, string_literal


def learning_rate_series_node(run: NamedNode, number: int) -> NamedNode:
    """The run's ``number``-th learning-rate series."""
    return child(run, "learning-rates", str(number))


def learning_rate_finder_node(run: NamedNode, epochs_before: int) -> NamedNode:
    """The finder run before the run's ``epochs_before``-th epoch (one a fit)."""
    return child(run, "learning-rate-finder", str(epochs_before))


def learning_rate_series(
    node: NamedNode,
    series: PointSeries,
    generator: NamedNode,
    written: float,
    setting: NamedNode,
    previous: NamedNode,
) -> list[Triple]:
    """The changes of one group's rate in one epoch (``generator``), of its ``lr`` ``setting``,
    derived from ``previous`` (the group's last series, or the setting itself)."""
    triples = series_records(node, (CNNPROV.LearningRateSeries,), series, generator, written)
    triples += [(node, CNNPROV.seriesOf, setting), (node, PROV.wasDerivedFrom, previous)]
    return triples


def learning_rate_finder(
    run: NamedNode,
    node: NamedNode,
    rates: list[float],
    losses: list[float],
    suggestion: float | None,
    written: float,
    sets: NamedNode | None = None,
) -> list[Triple]:
    """A learning-rate finder's trials: the ``rates`` tried and the ``losses`` they gave, as two
    series (``lr`` and ``loss``, their steps the trials' indices), its ``suggestion``, and the
    setting it ``sets`` (the run's hyperparameter it changed), which it generated."""
    triples: list[Triple] = [
        (node, RDF.type, PROV.Activity),
        (node, RDF.type, CNNPROV.LearningRateFinder),
        (node, CNNPROV.partOfRun, run),
        (node, CNNPROV.trialCount, integer_literal(len(rates))),
    ]
    if suggestion is not None:
        triples.append((node, CNNPROV.suggestedLearningRate, double_literal(suggestion)))
    for name, values in (("lr", rates), ("loss", losses)):
        if values:
            trials = child(node, "trials", name)
            triples += series_records(
                trials, (CNNPROV.Series,), PointSeries(list(range(len(values))), values), node, written
            )
            triples.append((trials, RDFS.label, string_literal(name)))
    if sets is not None:
        triples.append((sets, PROV.wasGeneratedBy, node))
    return triples
