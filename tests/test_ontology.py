"""The ontology declares every term cnnprov writes, with a label and a comment."""

from __future__ import annotations

from importlib import resources

import pytest
import rdflib
from rdflib.namespace import OWL, RDF, RDFS
from rdflib.namespace import PROV as RDFLIB_PROV

from cnnprov.rdf.vocab import CNNPROV, CNNPROV_NS, MLS_NS, PROV_NS


def _ontology(name: str) -> rdflib.Graph:
    path = resources.files("cnnprov").joinpath("ontologies", name)
    return rdflib.Graph().parse(data=path.read_text(encoding="utf-8"), format="turtle")


@pytest.fixture(scope="module")
def ontology() -> rdflib.Graph:
    return _ontology("cnnprov.ttl")


@pytest.fixture(scope="module")
def ml_schema_terms() -> set[str]:
    graph = _ontology("imports/mls-terms.ttl")
    return {str(s) for s in graph.subjects(RDF.type, None) if str(s).startswith(MLS_NS)}


def _declared(ontology: rdflib.Graph) -> set[str]:
    kinds = (OWL.Class, OWL.ObjectProperty, OWL.DatatypeProperty, RDFS.Datatype, OWL.NamedIndividual)
    return {str(s) for kind in kinds for s in ontology.subjects(RDF.type, kind) if str(s).startswith(CNNPROV_NS)}


def test_ontology_declares_exactly_the_vocabulary_module_terms(ontology):
    assert _declared(ontology) == {CNNPROV_NS + t for t in CNNPROV.terms}


def test_every_term_has_a_label_a_comment_and_an_anchor_in_prov_or_ml_schema(ontology):
    for term in map(rdflib.URIRef, _declared(ontology)):
        assert ontology.value(term, RDFS.label), term
        assert ontology.value(term, RDFS.comment), term
    for cls in (c for c in ontology.subjects(RDF.type, OWL.Class) if str(c).startswith(CNNPROV_NS)):
        # each class reaches PROV-O or ML Schema through its superclasses
        ancestors = set(ontology.transitive_objects(cls, RDFS.subClassOf))
        assert any(str(a).startswith((PROV_NS, MLS_NS)) for a in ancestors), cls


def test_every_term_a_recorded_run_uses_is_declared(sweep_store, ontology, ml_schema_terms):
    used = sweep_store.sparql(
        """SELECT DISTINCT ?term WHERE {
             { ?s ?term ?o } UNION { ?s a ?term }
           }"""
    ).column("term")
    ours = _declared(ontology)
    undeclared = []
    for term in used:
        if (
            (term.startswith(CNNPROV_NS) and term not in ours)
            or (term.startswith(PROV_NS) and rdflib.URIRef(term) not in RDFLIB_PROV)
            or (term.startswith(MLS_NS) and term not in ml_schema_terms)
        ):
            undeclared.append(term)
    assert undeclared == []
    # the check has teeth: the run does use terms from all three namespaces
    assert {t.split("#")[0] + "#" for t in used} >= {CNNPROV_NS, PROV_NS, MLS_NS}


def test_a_misspelt_term_is_caught_before_it_is_written():
    with pytest.raises(AttributeError, match="not a term cnnprov uses"):
        CNNPROV.kernelsize  # noqa: B018


#: The IRIs PROV-O and ML Schema declare as their ``owl:Ontology`` (prov-o.ttl of 2013-04-30 declares
#: ``prov-o#``, with version IRI ``prov-o-20130430``; MLSchema.ttl declares ``mls#``, see imports/mls-terms.ttl).
PROV_O_ONTOLOGY = "http://www.w3.org/ns/prov-o#"
ML_SCHEMA_ONTOLOGY = "http://www.w3.org/ns/mls#"


def test_the_ontology_imports_the_ontologies_prov_o_and_ml_schema_declare_and_has_a_version_iri(ontology):
    import cnnprov

    (name,) = ontology.subjects(RDF.type, OWL.Ontology)
    assert {str(i) for i in ontology.objects(name, OWL.imports)} == {PROV_O_ONTOLOGY, ML_SCHEMA_ONTOLOGY}
    offline = _ontology("imports/mls-terms.ttl")
    assert {str(o) for o in offline.subjects(RDF.type, OWL.Ontology)} == {ML_SCHEMA_ONTOLOGY}
    (version_iri,) = ontology.objects(name, OWL.versionIRI)
    assert str(version_iri) == f"{name}/{cnnprov.__version__}"
    assert str(ontology.value(name, OWL.versionInfo)) == cnnprov.__version__


#: PROV-O's datatype properties cnnprov writes (PROV-O declares them owl:DatatypeProperty).
PROV_DATATYPE_PROPERTIES = {PROV_NS + name for name in ("generatedAtTime", "startedAtTime", "endedAtTime", "atTime")}


def test_every_value_of_a_datatype_property_is_a_literal_as_owl_2_dl_requires(sweep_store, ontology):
    ml_schema = _ontology("imports/mls-terms.ttl")
    datatype_properties = (
        {str(p) for p in ontology.subjects(RDF.type, OWL.DatatypeProperty)}
        | {str(p) for p in ml_schema.subjects(RDF.type, OWL.DatatypeProperty)}
        | PROV_DATATYPE_PROPERTIES
    )
    assert MLS_NS + "hasValue" in datatype_properties
    rows = sweep_store.sparql("SELECT DISTINCT ?p ?o WHERE { ?s ?p ?o FILTER(!isLiteral(?o)) }").to_dicts()
    assert [row for row in rows if row["p"] in datatype_properties] == []
    # a setting of None (SGD's foreach, fused …) is recorded, without a value
    unset = sweep_store.sparql(
        f"""SELECT ?name WHERE {{ ?setting a <{MLS_NS}HyperParameterSetting> ;
              <{MLS_NS}specifiedBy>/<http://www.w3.org/2000/01/rdf-schema#label> ?name .
            FILTER NOT EXISTS {{ ?setting <{MLS_NS}hasValue> ?value }} }}"""
    ).column("name")
    assert "optimizer.foreach" in unset
