"""PROV-N, PROV-JSON and PROV-XML exports, through the ``prov`` package.

A store's runs are read as TriG (each run's named graph becomes a PROV bundle),
decoded by ``prov``'s PROV-O (RDF) deserializer into a ``ProvDocument``, and
serialized by ``prov``. Before decoding, each relation stated in both PROV-O
forms is reduced to one, so the exports carry every relation once:

* ``prov`` reads a usage, generation, derivation, start, end or invalidation
  stated both plainly (``prov:used``) and qualified (``prov:qualifiedUsage``) as
  two records. The plain triple is dropped where a qualified node states the
  same pair; the qualified node carries everything the plain triple says.
* ``prov`` merges the two forms of an association, attribution, delegation,
  communication and influence itself, but folds a plain relation that has no
  qualified node of its own into another qualified node of its subject
  (overwriting that node's agent). Such a plain relation gets a blank
  qualified node of its own, which ``prov`` reads as an anonymous relation.

And ``prov`` keeps only what it can attach to a PROV element or relation: a node
described without a PROV class (a measure or hyperparameter typed only with an
ML Schema class, a run named in a study's graph) gets one first, so its
description is kept: the class another graph gives it, ``prov:Activity`` if it is
described as an activity, else ``prov:Entity``.

Example::

    from cnnprov import ProvStore
    from cnnprov.analysis.prov_export import prov_document

    document = prov_document(ProvStore("provenance"), run="3f2a")
    print(document.get_provn())
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from cnnprov.rdf.vocab import PREFIXES, PROV_NS

if TYPE_CHECKING:  # prov and rdflib load when an export runs, not when the CLI starts
    import rdflib
    from prov.model import ProvDocument

    from cnnprov.analysis.provstore import ProvStore

#: cnnprov export format → (prov serializer format, its options).
PROV_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "provn": ("provn", {}),
    "provjson": ("json", {"indent": 2}),
    "provxml": ("xml", {}),
}

#: Plain relation → (its qualifying property, the property naming the influencer on the qualified node),
#: for the relations prov reads as two records when both forms are stated.
BOTH_FORMS_READ_TWICE = {
    "used": ("qualifiedUsage", "entity"),
    "wasGeneratedBy": ("qualifiedGeneration", "activity"),
    "wasDerivedFrom": ("qualifiedDerivation", "entity"),
    "wasStartedBy": ("qualifiedStart", "entity"),
    "wasEndedBy": ("qualifiedEnd", "entity"),
    "wasInvalidatedBy": ("qualifiedInvalidation", "activity"),
}
#: The same for the relations prov merges itself: (qualifying property, influencer property, qualified class).
BOTH_FORMS_MERGED_BY_PROV = {
    "wasAssociatedWith": ("qualifiedAssociation", "agent", "Association"),
    "wasAttributedTo": ("qualifiedAttribution", "agent", "Attribution"),
    "actedOnBehalfOf": ("qualifiedDelegation", "agent", "Delegation"),
    "wasInformedBy": ("qualifiedCommunication", "activity", "Communication"),
    "wasInfluencedBy": ("qualifiedInfluence", "influencer", "Influence"),
}


def prov_document(store: ProvStore, run: str | None = None) -> ProvDocument:
    """One run (``run``, an id or its start) or every run of a store as a ``prov`` ``ProvDocument``.

    Each run is a bundle of the document, named by its bundle IRI.
    """
    from prov.model import ProvDocument
    from prov.serializers.provrdf import ProvRDFSerializer

    dataset = _dataset(store.export("trig", run=run))
    elsewhere = _element_classes(dataset)
    for graph in dataset.graphs():
        one_form_per_relation(graph)
        described_as_prov(graph, elsewhere)
    document = ProvDocument()
    # prov's decoder reads only namespaces() and graphs(), all that _DeclaredPrefixes offers.
    ProvRDFSerializer(document).decode_document(cast("rdflib.Dataset", _DeclaredPrefixes(dataset)), document)
    return document


def export_prov(store: ProvStore, format: str, run: str | None = None) -> bytes:
    """Serialize one run or every run as PROV-N (``provn``), PROV-JSON (``provjson``) or PROV-XML (``provxml``)."""
    try:
        prov_format, options = PROV_FORMATS[format]
    except KeyError:
        raise ValueError(f"unknown PROV format '{format}'; choose one of {', '.join(PROV_FORMATS)}") from None
    text: str | bytes | None = prov_document(store, run=run).serialize(format=prov_format, **options)
    assert text is not None, "prov returns the serialization when given no destination"
    return text.encode("utf-8") if isinstance(text, str) else text


def one_form_per_relation(graph: rdflib.Graph) -> rdflib.Graph:
    """Reduce relations stated in both PROV-O forms so that ``prov`` reads each once (changes ``graph``).

    Returns the graph. See the module's documentation for what changes.
    """
    import rdflib
    from rdflib.namespace import RDF

    prov = rdflib.Namespace(PROV_NS)
    for plain, (qualifying, influencer) in BOTH_FORMS_READ_TWICE.items():
        for subject, obj in list(graph.subject_objects(prov[plain])):
            if any((node, prov[influencer], obj) in graph for node in graph.objects(subject, prov[qualifying])):
                graph.remove((subject, prov[plain], obj))
    for plain, (qualifying, influencer, cls) in BOTH_FORMS_MERGED_BY_PROV.items():
        for subject, obj in list(graph.subject_objects(prov[plain])):
            nodes = list(graph.objects(subject, prov[qualifying]))
            if nodes and not any((node, prov[influencer], obj) in graph for node in nodes):
                node = rdflib.BNode()
                graph.add((subject, prov[qualifying], node))
                graph.add((node, RDF.type, prov[cls]))
                graph.add((node, prov[influencer], obj))
    return graph


#: PROV-O classes prov reads as a record of their own (elements and qualified relations).
PROV_RECORD_CLASSES = frozenset(
    "Entity Activity Agent Person SoftwareAgent Organization Plan Collection EmptyCollection Bundle "
    "Generation Usage Communication Start End Invalidation Derivation Revision Quotation PrimarySource "
    "Attribution Association Delegation Influence Alternate Specialization Mention Membership".split()
)


#: Properties only an activity has, in PROV-O: a node described with them is an activity.
ACTIVITY_PROPERTIES = frozenset(
    "used wasInformedBy wasAssociatedWith startedAtTime endedAtTime wasStartedBy wasEndedBy "
    "qualifiedUsage qualifiedAssociation qualifiedCommunication".split()
)


def described_as_prov(graph: rdflib.Graph, elsewhere: dict | None = None) -> rdflib.Graph:
    """Give a PROV class to every IRI the graph describes without one (changes ``graph``).

    The class is the one ``elsewhere`` (node → PROV class IRI, such as the types a run's own graph
    gives it) names; else ``prov:Activity`` for a node described with an activity's properties
    (``prov:used`` …); else ``prov:Entity``. Returns the graph.
    """
    import rdflib
    from rdflib.namespace import RDF

    prov_classes = {rdflib.URIRef(PROV_NS + name) for name in PROV_RECORD_CLASSES}
    activity_properties = {rdflib.URIRef(PROV_NS + name) for name in ACTIVITY_PROPERTIES}
    for subject in set(graph.subjects()):
        if not isinstance(subject, rdflib.URIRef) or any(t in prov_classes for t in graph.objects(subject, RDF.type)):
            continue
        cls = (elsewhere or {}).get(subject)
        if cls is None:
            described_as_activity = any(p in activity_properties for p in graph.predicates(subject))
            cls = rdflib.URIRef(PROV_NS + ("Activity" if described_as_activity else "Entity"))
        graph.add((subject, RDF.type, cls))
    return graph


def _element_classes(dataset: rdflib.Dataset) -> dict:
    """Node → the PROV element class (entity, activity, agent) any graph of the dataset gives it."""
    import rdflib
    from rdflib.namespace import RDF

    elements = [rdflib.URIRef(PROV_NS + name) for name in ("Activity", "Agent", "Entity")]
    classes: dict = {}
    for cls in elements:
        for node in dataset.subjects(RDF.type, cls):
            classes.setdefault(node, cls)
    return classes


def _dataset(trig: bytes) -> rdflib.Dataset:
    import rdflib

    return rdflib.Dataset().parse(data=trig, format="trig")


class _DeclaredPrefixes:
    """A dataset as prov's decoder reads it, declaring only the prefixes cnnprov's exports declare.

    (rdflib binds some thirty well-known prefixes to every graph; prov would declare them all.)
    """

    def __init__(self, dataset: rdflib.Dataset) -> None:
        self._dataset = dataset

    def namespaces(self) -> Iterator[tuple[str, str]]:
        return iter(PREFIXES.items())

    def graphs(self) -> Iterator[rdflib.Graph]:
        return self._dataset.graphs()
