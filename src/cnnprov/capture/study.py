"""Pure builders of a hyperparameter study's records (see :mod:`cnnprov.integrations.optuna`).

As in :mod:`cnnprov.capture.records`, of which these reuse the agent and
setting builders: plain values and nodes in, triples out, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyoxigraph import NamedNode

from cnnprov.capture import records
from cnnprov.capture.hyperparameters import scalar
from cnnprov.rdf import prov_forms
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import (
    CNNPROV,
    PROV,
    RDF,
    RDFS,
    child,
    datetime_literal,
    double_literal,
    integer_literal,
    iri,
    iri_segment,
    literal,
    string_literal,
)


def study(
    bundle: NamedNode,
    activity: NamedNode,
    name: str,
    direction: str,
    started: float,
    sampler: NamedNode,
    sampler_class: str,
    sampler_version: str | None = None,
) -> list[Triple]:
    """The study activity, its bundle, and the sampler (``module.Class``) as the agent it was associated with."""
    triples: list[Triple] = [
        (bundle, RDF.type, PROV.Entity),
        (bundle, RDF.type, PROV.Bundle),
        (activity, RDF.type, PROV.Activity),
        (activity, RDF.type, CNNPROV.HyperparameterStudy),
        (activity, RDFS.label, string_literal(name)),
        (activity, CNNPROV.optimizationDirection, string_literal(direction)),
        (activity, PROV.startedAtTime, datetime_literal(started)),
    ]
    triples += records.agent(activity, sampler, PROV.SoftwareAgent, sampler_class.rsplit(".", 1)[-1])
    triples += prov_forms.association(activity, sampler)
    triples.append((sampler, CNNPROV.pythonClass, string_literal(sampler_class)))
    if sampler_version is not None:
        triples.append((sampler, CNNPROV.softwareVersion, string_literal(sampler_version)))
    return triples


def trial(
    run: NamedNode,
    activity: NamedNode,
    sampler: NamedNode,
    base: str,
    number: int,
    state: str,
    value: float | None,
    params: Mapping[str, Any],
) -> list[Triple]:
    """Trial ``number`` of the study trained in ``run``: its state, objective value and the sampler's suggestions."""
    triples: list[Triple] = [
        (run, CNNPROV.partOfStudy, activity),
        (run, PROV.wasInformedBy, activity),
        (run, CNNPROV.trialNumber, integer_literal(number)),
        (run, CNNPROV.trialState, string_literal(state)),
    ]
    if value is not None:
        triples.append((run, CNNPROV.objectiveValue, double_literal(value)))
    for name, suggested in params.items():
        node = child(child(activity, "trial", number), "suggestion", name)
        parameter = iri(base, "hyperparameter", iri_segment(name))
        triples += records.setting(node, parameter, literal(scalar(suggested)))
        triples += [
            (node, PROV.wasAttributedTo, sampler),
            (node, PROV.wasGeneratedBy, activity),
            (node, CNNPROV.trialNumber, integer_literal(number)),
        ]
        triples += records.hyperparameter(parameter, name)
        triples.append((run, PROV.used, node))
    return triples


def study_end(activity: NamedNode, ended: float, best_run: NamedNode | None = None) -> list[Triple]:
    """The study's end, and the run of its best trial if it has one."""
    triples: list[Triple] = [(activity, PROV.endedAtTime, datetime_literal(ended))]
    if best_run is not None:
        triples.append((activity, CNNPROV.bestRun, best_run))
    return triples
