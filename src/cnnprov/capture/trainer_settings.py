"""The settings of the loop that trained a run (a Lightning Trainer's precision, clipping,
accumulation, limits, strategy…), as records: plain data in, triples out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyoxigraph import NamedNode

from cnnprov.capture.records import hyperparameter_setting
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import CNNPROV, PROV, RDF, child, string_literal

#: The namespace of these settings' hyperparameter names (``trainer.precision``), kept apart from
#: the model's own hyperparameters so that listings of those stay as the user logged them.
NAMESPACE = "trainer"


def trainer_node(run: NamedNode) -> NamedNode:
    return child(run, NAMESPACE)


def trainer_configuration(run: NamedNode, base: str, python_class: str, settings: Mapping[str, Any]) -> list[Triple]:
    """The training loop's configuration, an entity the run used, with one setting per entry."""
    node = trainer_node(run)
    triples: list[Triple] = [
        (node, RDF.type, PROV.Entity),
        (node, RDF.type, CNNPROV.TrainerConfiguration),
        (node, CNNPROV.pythonClass, string_literal(python_class)),
        (run, PROV.used, node),
    ]
    for key, value in settings.items():
        if value is not None:
            triples += hyperparameter_setting(run, base, node, key, value, f"{NAMESPACE}.{key}")
    return triples
