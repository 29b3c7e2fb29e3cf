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

A literal of a datatype of cnnprov's own (``cnnprov:pointsJSON``) becomes a plain string:
PROV-XML writes a literal's datatype as its ``xsi:type``, which must name a type that
W3C's schema knows (XML Schema's); the property (``cnnprov:seriesPoints``) still says what it holds.

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

import hashlib
import re
from typing import TYPE_CHECKING, Any

from cnnprov.rdf.vocab import PREFIXES, PROV_NS, XSD_NS

if TYPE_CHECKING:  # prov and rdflib load when an export runs, not when the CLI starts
    import rdflib
    from prov.model import ProvBundle, ProvDocument

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
    graphs = []
    for graph in sorted((g for g in dataset.graphs() if len(g)), key=lambda g: str(g.identifier)):
        graph = _in_order(graph)
        one_form_per_relation(graph)
        generation_times(graph)
        described_as_prov(graph, elsewhere)
        schema_datatypes(graph)
        graphs.append(_in_order(graph))
    document = ProvDocument()
    serializer = ProvRDFSerializer(document)
    # prov compacts an IRI with the first namespace of its bundle, then of the document, that the
    # IRI starts with: each bundle gets every namespace, the longest first (and drops the copies below).
    spaces = sorted(namespaces_of(graphs).items(), key=lambda item: (-len(item[1]), item[0]))
    for prefix, space in spaces:
        document.add_namespace(prefix, space)
    for graph in graphs:
        bundle = document.bundle(document.mandatory_valid_qname(str(graph.identifier)))
        for prefix, space in spaces:
            bundle.add_namespace(prefix, space)
        serializer.decode_container(graph, bundle)
    declared = dict(document._namespaces._namespaces)
    for bundle in document.bundles:
        # a bundle redeclares a document's namespace depending on which bundle met it first
        own = bundle._namespaces._namespaces
        for prefix in [p for p, ns in own.items() if declared.get(p) == ns]:
            del own[prefix]
    for container in (document, *document.bundles):
        in_one_order(container)
    return document


def in_one_order(bundle: ProvBundle) -> ProvBundle:
    r"""Order a bundle's records, their attributes and its namespaces, whatever the hash seed (changes it).

    prov writes records, an attribute's values and a bundle's namespaces in the order it met them,
    which follows the order of ``set``\ s; sorting them makes the same store give the same bytes.
    Returns the bundle.
    """
    from prov.model.records import TypedValueSet

    for record in bundle._records:
        attributes = record._attributes
        ordered = {name: TypedValueSet(sorted(attributes[name], key=repr)) for name in sorted(attributes, key=str)}
        attributes.clear()
        attributes.update(ordered)
    bundle._records.sort(key=lambda record: record.get_provn())
    registered = bundle._namespaces._namespaces  # what prov declares, in this dict's order
    by_prefix = sorted(registered.items(), key=lambda item: (len(item[0]), item[0]))  # n2 before n10
    registered.clear()
    registered.update(by_prefix)
    return bundle


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
                # named by its ends, so that the same store always gives the same export
                node = rdflib.BNode("q" + hashlib.sha1(f"{plain} {subject} {obj}".encode()).hexdigest()[:16])
                graph.add((subject, prov[qualifying], node))
                graph.add((node, RDF.type, prov[cls]))
                graph.add((node, prov[influencer], obj))
    return graph


def generation_times(graph: rdflib.Graph) -> rdflib.Graph:
    """State each ``prov:generatedAtTime`` as the time of the entity's generation (changes ``graph``).

    PROV-DM has no generation-time attribute of an entity: the time is the generation's
    (``wasGeneratedBy(e, a, t)``), which PROV-O qualifies as a ``prov:Generation``'s ``prov:atTime``.
    ``prov`` reads a plain ``prov:generatedAtTime`` as an entity attribute (a string once read back
    from PROV-XML), so the plain triple is dropped where the entity's qualified generation has its
    time, and moved onto that generation (or a new one) where it has none; a new one takes over the
    entity's sole plain ``prov:wasGeneratedBy``, so that ``prov`` reads one generation. Returns the graph.
    """
    import rdflib
    from rdflib.namespace import RDF

    prov = rdflib.Namespace(PROV_NS)
    for entity, time in list(graph.subject_objects(prov.generatedAtTime)):
        nodes = sorted(graph.objects(entity, prov.qualifiedGeneration), key=str)
        if not any((node, prov.atTime, time) in graph for node in nodes):
            untimed = [node for node in nodes if graph.value(node, prov.atTime) is None]
            node = untimed[0] if untimed else rdflib.URIRef(f"{entity}/generation")
            activities = list(graph.objects(entity, prov.wasGeneratedBy))
            if not nodes and len(activities) == 1:  # written in the plain form only (a series): one record
                graph.add((node, prov.activity, activities[0]))
                graph.remove((entity, prov.wasGeneratedBy, activities[0]))
            graph.add((entity, prov.qualifiedGeneration, node))
            graph.add((node, RDF.type, prov.Generation))
            graph.add((node, prov.atTime, time))
        graph.remove((entity, prov.generatedAtTime, time))
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


def schema_datatypes(graph: rdflib.Graph) -> rdflib.Graph:
    """Make each literal of a datatype outside XML Schema a plain string (changes ``graph``); returns it."""
    import rdflib

    for subject, predicate, obj in list(graph):
        if isinstance(obj, rdflib.Literal) and obj.datatype is not None and not str(obj.datatype).startswith(XSD_NS):
            graph.remove((subject, predicate, obj))
            graph.add((subject, predicate, rdflib.Literal(str(obj))))
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


def _in_order(graph: rdflib.Graph) -> rdflib.Graph:
    """A copy of ``graph`` whose triples rdflib iterates in one order, whatever the hash seed.

    (A dataset's graphs keep their triples in sets; prov writes records in the order it reads them.)
    """
    import rdflib

    ordered = rdflib.Graph(identifier=graph.identifier)
    for triple in sorted(graph, key=lambda t: tuple(f"{type(n).__name__} {n}" for n in t)):
        ordered.add(triple)
    return ordered


#: XML's NCName, which a local name of PROV-XML (an ``xs:QName``) must be: no digit first, no ``/`` or ``%``.
_NCNAME = re.compile(r"[A-Za-z_][\w.-]*\Z", re.ASCII)


def namespaces_of(graphs: list[rdflib.Graph]) -> dict[str, str]:
    """cnnprov's prefixes, then one prefix per further namespace the graphs' IRIs are in.

    Each IRI's namespace is the IRI up to its last ``/`` or ``#``, so that the rest (the local
    name) has neither; the prefixes are named in order of the namespaces (``n1``, ``n2`` …),
    so an export's prefixes do not depend on the order prov meets the IRIs in.
    """
    import rdflib

    known = tuple(PREFIXES.values())
    spaces = set()
    for graph in graphs:
        for node in (graph.identifier, *(n for triple in graph for n in triple)):
            if isinstance(node, rdflib.URIRef) and not str(node).startswith(known):
                text = str(node)
                cut = max(text.rfind("/"), text.rfind("#")) + 1
                if cut:
                    spaces.add(text[:cut])
    minted = {f"n{i}": space for i, space in enumerate(sorted(spaces), start=1)}
    return {**PREFIXES, **minted}
