"""PROV-O's qualified forms, written beside the plain relations they qualify.

PROV-O states usage, generation and association both plainly (``prov:used``)
and qualified (``prov:qualifiedUsage`` → a ``prov:Usage`` with ``prov:entity``).
cnnprov writes the plain form always (it keeps SPARQL simple) and the qualified
form where it carries what the plain one cannot: a usage's role (:func:`used_in_role`),
a generation's time, an association's plan. A roleless usage is the plain
``prov:used`` alone. The qualified node is minted from the two ends of the
relation, so writing a relation twice writes the same quads and the two forms
always agree.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pyoxigraph import NamedNode

from cnnprov.rdf.vocab import PROV, RDF, child

Triple = tuple[Any, Any, Any]


def _node(subject: NamedNode, kind: str, other: NamedNode) -> NamedNode:
    # a short stable digest keeps the IRI readable and unique per (subject, other) pair
    digest = hashlib.sha1(other.value.encode("utf-8")).hexdigest()[:16]
    return child(subject, kind, digest)


def used_in_role(activity: NamedNode, entity: NamedNode, role: NamedNode) -> list[Triple]:
    """``activity`` ``prov:used`` ``entity``, plainly and qualified with the ``role`` (a ``prov:Role``) it had."""
    node = _node(activity, "usage", entity)
    return [
        (activity, PROV.used, entity),
        (activity, PROV.qualifiedUsage, node),
        (node, RDF.type, PROV.Usage),
        (node, PROV.entity, entity),
        (node, PROV.hadRole, role),
    ]


def generation(entity: NamedNode, activity: NamedNode) -> list[Triple]:
    node = NamedNode(entity.value + "/generation")
    return [
        (entity, PROV.qualifiedGeneration, node),
        (node, RDF.type, PROV.Generation),
        (node, PROV.activity, activity),
    ]


def association(activity: NamedNode, agent: NamedNode) -> list[Triple]:
    node = _node(activity, "association", agent)
    return [(activity, PROV.qualifiedAssociation, node), (node, RDF.type, PROV.Association), (node, PROV.agent, agent)]


def generation_time(entity: NamedNode, time: Any) -> list[Triple]:
    """``prov:generatedAtTime``, qualified: the same generation node's ``prov:atTime``."""
    node = NamedNode(entity.value + "/generation")
    return [(entity, PROV.qualifiedGeneration, node), (node, RDF.type, PROV.Generation), (node, PROV.atTime, time)]


#: The plain relations that get a qualified twin, and how (a usage gets one with its role only).
QUALIFIERS = {
    PROV.wasGeneratedBy: generation,
    PROV.generatedAtTime: generation_time,
}


def with_qualified_form(subject: Any, predicate: Any, obj: Any) -> list[Triple]:
    """The triple itself, plus its qualified form where it is written (generation and its time)."""
    qualify = QUALIFIERS.get(predicate)
    triples = [(subject, predicate, obj)]
    if (
        qualify is not None
        and isinstance(subject, NamedNode)
        and (predicate == PROV.generatedAtTime or isinstance(obj, NamedNode))
    ):
        triples.extend(qualify(subject, obj))
    return triples
