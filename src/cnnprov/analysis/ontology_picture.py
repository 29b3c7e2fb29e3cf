"""A picture of the ontology: the classes of ``ontologies/cnnprov.ttl`` and their superclasses
in PROV-O and ML Schema, as Graphviz DOT (``docs/ontology.svg`` is drawn from it)."""

from __future__ import annotations

from importlib import resources

from cnnprov.analysis.picture import _ACTIVITY, _AGENT, _ENTITY, Dot
from cnnprov.rdf.vocab import CNNPROV_NS, MLS_NS, PROV_NS


def ontology_dot() -> str:
    """DOT text of the classes of ``ontologies/cnnprov.ttl`` and their ``rdfs:subClassOf`` links
    into PROV-O and ML Schema (subclasses on the left, UML-style hollow arrows to the superclass)."""
    import rdflib
    from rdflib.namespace import OWL, RDF, RDFS

    # One name per joinpath: Traversable takes no more before Python 3.11.
    text = (resources.files("cnnprov") / "ontologies" / "cnnprov.ttl").read_text(encoding="utf-8")
    graph = rdflib.Graph().parse(data=text, format="turtle")
    ours = sorted(str(c) for c in graph.subjects(RDF.type, OWL.Class) if str(c).startswith(CNNPROV_NS))
    links = sorted(
        (str(c), str(parent))
        for c in ours
        for parent in graph.objects(rdflib.URIRef(c), RDFS.subClassOf)
        if isinstance(parent, rdflib.URIRef)
    )
    title = "cnnprov ontology: classes and their superclasses in PROV-O and ML Schema"
    dot = Dot(title=title, rankdir="LR", name="ontology")
    names: dict[str, str] = {}

    def node(iri: str) -> str:
        if iri not in names:
            names[iri] = dot.node(_prefixed(iri), _class_style(iri))
        return names[iri]

    for cls in ours:
        node(cls)
    for cls, parent in links:
        dot.edge(node(cls), node(parent), style="arrowhead=onormal")
    dot.lines.append(
        '  legend [shape=plaintext, fontsize=9, label="cnnprov: white  ·  PROV-O: yellow entity, blue activity, '
        'orange agent  ·  ML Schema: green"];'
    )
    return dot.text()


def _prefixed(iri: str) -> str:
    for prefix, namespace in (("cnnprov", CNNPROV_NS), ("prov", PROV_NS), ("mls", MLS_NS)):
        if iri.startswith(namespace):
            return f"{prefix}:{iri[len(namespace):]}"
    return iri


def _class_style(iri: str) -> str:
    if iri.startswith(PROV_NS):
        name = iri[len(PROV_NS):]
        if name in ("Activity",):
            return _ACTIVITY
        if name in ("Agent", "Person", "SoftwareAgent"):
            return _AGENT
        return _ENTITY
    if iri.startswith(MLS_NS):
        return 'shape=box, style="rounded,filled", fillcolor="#C7EBC0", color="#3C8031"'
    return 'shape=box, style="rounded,filled", fillcolor="#FFFFFF", color="#404040"'
