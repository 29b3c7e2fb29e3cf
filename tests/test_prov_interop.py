"""PROV interoperability: the `prov` package reads cnnprov's records, PROV-N/JSON/XML exports, pictures, docs.

What `prov` (3.2.3) reads is compared with the triples of the export it read: every node the
export describes must come back as a PROV element, every relation as a record of its type between
the same two nodes, at most once per form it is stated in (prov reads a usage or generation stated
both plainly and qualified as two records; see shared/CLARIFICATIONS.md), and nothing else.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pyoxigraph as ox
import pytest
import rdflib
from prov.model import ProvBundle, ProvDocument, ProvElement, ProvRelation
from rdflib import Namespace, URIRef
from rdflib.namespace import OWL, RDF, RDFS

from cnnprov import ProvStore
from cnnprov.analysis.ontology_picture import ontology_dot
from cnnprov.analysis.picture import run_dot

from helpers import cli, cli_env

ROOT = Path(__file__).resolve().parents[1]
PROV = Namespace("http://www.w3.org/ns/prov#")
CP = Namespace("https://w3id.org/cnnprov/ns#")
MLS = Namespace("http://www.w3.org/ns/mls#")

#: PROV-O relation property → the prov record type it reads as.
RELATIONS = {
    "used": "ProvUsage",
    "wasGeneratedBy": "ProvGeneration",
    "wasAssociatedWith": "ProvAssociation",
    "wasAttributedTo": "ProvAttribution",
    "wasInformedBy": "ProvCommunication",
    "wasDerivedFrom": "ProvDerivation",
    "hadMember": "ProvMembership",
    "specializationOf": "ProvSpecialization",
    "actedOnBehalfOf": "ProvDelegation",
    "wasStartedBy": "ProvStart",
    "wasEndedBy": "ProvEnd",
    "wasInvalidatedBy": "ProvInvalidation",
    "wasInfluencedBy": "ProvInfluence",
}
#: Qualified class → (record type, qualifying property, influencer property, whether prov merges it with
#: the plain form).
QUALIFIED = {
    "Usage": ("ProvUsage", "qualifiedUsage", "entity", False),
    "Generation": ("ProvGeneration", "qualifiedGeneration", "activity", False),
    "Derivation": ("ProvDerivation", "qualifiedDerivation", "entity", False),
    "Association": ("ProvAssociation", "qualifiedAssociation", "agent", True),
    "Attribution": ("ProvAttribution", "qualifiedAttribution", "agent", True),
    "Communication": ("ProvCommunication", "qualifiedCommunication", "activity", True),
    "Delegation": ("ProvDelegation", "qualifiedDelegation", "agent", True),
    "Influence": ("ProvInfluence", "qualifiedInfluence", "influencer", True),
}
ELEMENTS = {PROV.Entity: "ProvEntity", PROV.Activity: "ProvActivity", PROV.Agent: "ProvAgent"}




# -- comparing what prov read with the triples it read ----------------------------------------------
def read_with_prov(content: bytes | str, **options) -> tuple[ProvDocument, list[str]]:
    """Deserialize with prov, returning the document and the warnings prov gave (it warns when it drops data)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        document = ProvDocument.deserialize(content=content, **options)
    return document, [str(w.message)[:300] for w in caught if issubclass(w.category, UserWarning)]


def expected_records(graph: rdflib.Graph, one_per_relation: bool) -> tuple[dict, dict]:
    """From an export's triples: {node: element type} and {(record type, a, b): most records allowed}.

    ``one_per_relation``: a relation stated in both forms may be read once (cnnprov's own PROV exports)
    rather than once per form (prov reading PROV-O).
    """
    qualified_nodes = {q for cls in QUALIFIED for q in graph.subjects(RDF.type, PROV[cls])}
    elements = {}
    for subject in set(graph.subjects()):
        if isinstance(subject, URIRef) and subject not in qualified_nodes:
            kinds = [ELEMENTS[t] for t in graph.objects(subject, RDF.type) if t in ELEMENTS]
            elements[str(subject)] = kinds[0] if kinds else "an element (it is typed with no PROV class)"
    plain, qualified = collections.Counter(), collections.Counter()
    for name, record in RELATIONS.items():
        for a, b in graph.subject_objects(PROV[name]):
            plain[(record, str(a), str(b))] = 1
    merged = set()
    for cls, (record, qualifying, influencer, merged_by_prov) in QUALIFIED.items():
        for node in graph.subjects(RDF.type, PROV[cls]):
            for a in graph.subjects(PROV[qualifying], node):
                key = (record, str(a), str(graph.value(node, PROV[influencer])))
                qualified[key] += 1
                if merged_by_prov:
                    merged.add(key)
    most = {}
    for key in set(plain) | set(qualified):
        if one_per_relation or key in merged:
            most[key] = max(plain[key], qualified[key])
        else:
            most[key] = plain[key] + qualified[key]
    return elements, most


def read_records(bundle: ProvBundle) -> tuple[collections.Counter, collections.Counter]:
    elements = collections.Counter()
    relations = collections.Counter()
    for record in bundle.get_records():
        if isinstance(record, ProvElement):
            elements[(str(record.identifier.uri), type(record).__name__)] += 1
        elif isinstance(record, ProvRelation):
            (_, a), (_, b) = list(record.formal_attributes)[:2]
            relations[(type(record).__name__, a.uri if a else None, b.uri if b else None)] += 1
    return elements, relations


def problems(
    graph: rdflib.Graph, bundle: ProvBundle, one_per_relation: bool, types: set[str] | None = None
) -> list[str]:
    """Everything prov dropped, duplicated or made up, compared with the triples it read."""
    expected_elements, most = expected_records(graph, one_per_relation)
    elements, relations = read_records(bundle)
    found = []
    if types is None:
        read = {node: kind for node, kind in elements}
        for node, kind in sorted(expected_elements.items()):
            if node not in read:
                found.append(f"dropped {node}: expected {kind}")
            elif read[node] != kind and kind in ELEMENTS.values():
                found.append(f"{node} read as {read[node]}, typed {kind}")
        found += [f"{node} read {n} times" for (node, _), n in elements.items() if n > 1]
    for key, allowed in sorted(most.items()):
        if types is None or key[0] in types:
            if relations[key] == 0:
                found.append(f"dropped {key}")
            elif relations[key] > allowed:
                found.append(f"{key} read {relations[key]} times (stated in {allowed} form(s))")
    for key in sorted(relations, key=str):
        if key not in most and (types is None or key[0] in types):
            found.append(f"made up {key} ({relations[key]} times)")
    return found


@pytest.fixture(scope="module")
def run_turtle(sweep_store: ProvStore) -> tuple[str, bytes]:
    run_id = sorted(sweep_store.runs().to_dicts(), key=lambda r: r["name"])[0]["run_id"]
    return run_id, sweep_store.export("turtle", run=run_id)


def with_both_forms(graph: rdflib.Graph) -> rdflib.Graph:
    """Add the qualified form of every plain usage and generation that lacks one (the recorder writes both)."""
    qualified_usages = {
        (activity, graph.value(usage, PROV.entity)) for activity, usage in graph.subject_objects(PROV.qualifiedUsage)
    }
    for n, (activity, entity) in enumerate(sorted(graph.subject_objects(PROV.used))):
        if (activity, entity) in qualified_usages:
            continue
        usage = URIRef(f"{activity}/usage/{n}")
        graph.add((activity, PROV.qualifiedUsage, usage))
        graph.add((usage, RDF.type, PROV.Usage))
        graph.add((usage, PROV.entity, entity))
    for entity, activity in sorted(graph.subject_objects(PROV.wasGeneratedBy)):
        if graph.value(entity, PROV.qualifiedGeneration) is not None:
            continue
        generation = URIRef(f"{entity}/generation")
        graph.add((entity, PROV.qualifiedGeneration, generation))
        graph.add((generation, RDF.type, PROV.Generation))
        graph.add((generation, PROV.activity, activity))
        time = graph.value(entity, PROV.generatedAtTime)
        if time is not None:
            graph.add((generation, PROV.atTime, time))
    return graph


def test_the_recorder_writes_the_qualified_form_where_it_carries_something_and_both_forms_agree(run_turtle):
    graph = rdflib.Graph().parse(data=run_turtle[1], format="turtle")
    pairs = {
        "used": (PROV.used, PROV.qualifiedUsage, PROV.entity),
        "generated": (PROV.wasGeneratedBy, PROV.qualifiedGeneration, PROV.activity),
        "associated": (PROV.wasAssociatedWith, PROV.qualifiedAssociation, PROV.agent),
    }
    qualified = {}
    for name, (plain, qualifying, target) in pairs.items():
        plain_pairs = set(graph.subject_objects(plain))
        qualified[name] = {(s, graph.value(node, target)) for s, node in graph.subject_objects(qualifying)}
        assert plain_pairs, name
        assert qualified[name] <= plain_pairs, f"a qualified {name} the plain form does not state"
        if name == "associated":
            assert plain_pairs == qualified[name], name
    # A usage is qualified where it has a role: the data a run trained and validated on. The usages of
    # settings, the architecture and the environment have none, and are the plain prov:used alone.
    roles = {graph.value(node, PROV.hadRole) for node in graph.objects(None, PROV.qualifiedUsage)}
    assert roles == {CP.trainData, CP.validationData}
    data = {entity for _, entity in qualified["used"]}
    assert data == set(graph.subjects(RDF.type, MLS.Dataset))
    assert len(set(graph.subject_objects(PROV.used))) > len(qualified["used"]) + 10
    # A metric value's or a series' generation is plain only (its time says all there is); the
    # others (checkpoints above all, with a time of their own) have their qualified form too.
    plain_only = {entity for entity, _ in set(graph.subject_objects(PROV.wasGeneratedBy)) - qualified["generated"]}
    value_classes = {MLS.ModelEvaluation, CP.MetricSeries, CP.LearningRateSeries}
    assert plain_only and all(set(graph.objects(e, RDF.type)) & value_classes for e in plain_only)
    checkpoints = set(graph.subjects(RDF.type, CP.Checkpoint))
    assert checkpoints and checkpoints <= {entity for entity, _ in qualified["generated"]}


# -- 2. prov reads the Turtle export ------------------------------------------------------------------
def test_prov_reads_a_turtle_export_dropping_nothing_and_duplicating_nothing(run_turtle):
    _run_id, turtle = run_turtle
    graph = rdflib.Graph().parse(data=turtle, format="turtle")
    document, warned = read_with_prov(turtle, format="rdf", rdf_format="turtle")
    kinds = collections.Counter(type(r).__name__ for r in document.get_records())
    assert kinds["ProvGeneration"] > 10 and kinds["ProvUsage"] > 10 and kinds["ProvActivity"] >= 3  # a real read
    found = problems(graph, document, one_per_relation=False)
    assert (warned, found) == ([], []), (
        "prov drops what it cannot attach to a PROV element or relation, and folds a plain "
        "prov:wasAssociatedWith without a qualified association of its own into another one: "
        "the recorder must type every node it describes with a PROV class and give every associated "
        f"agent its own prov:qualifiedAssociation.\n{warned}\n" + "\n".join(found[:40])
    )


def test_prov_reads_a_usage_or_generation_in_both_forms_at_most_once_per_form(run_turtle):
    graph = with_both_forms(rdflib.Graph().parse(data=run_turtle[1], format="turtle"))
    document, _ = read_with_prov(graph.serialize(format="turtle"), format="rdf", rdf_format="turtle")
    types = {"ProvUsage", "ProvGeneration"}
    assert problems(graph, document, one_per_relation=False, types=types) == []
    _, relations = read_records(document)
    counts = collections.Counter(n for key, n in relations.items() if key[0] in types)
    assert set(counts) == {2}  # the documented behaviour: one record per form, never more


# -- 3. cnnprov's PROV-N, PROV-JSON and PROV-XML exports -------------------------------------------------
@pytest.fixture(scope="module")
def store_graphs(sweep_store: ProvStore) -> dict[str, rdflib.Graph]:
    dataset = rdflib.Dataset().parse(data=sweep_store.export("trig"), format="trig")
    return {str(g.identifier): g for g in dataset.graphs() if len(g)}


@pytest.mark.parametrize(("fmt", "prov_format"), [("provn", "provn"), ("provjson", "json"), ("provxml", "xml")])
def test_prov_exports_keep_each_run_as_a_bundle_with_every_relation_once(sweep_store, store_graphs, fmt, prov_format):
    exported = sweep_store.export(fmt)
    document, warned = read_with_prov(exported, format=prov_format)
    assert warned == []
    assert document.get_records() == []  # everything lives in the runs' bundles
    bundles = {str(b.identifier.uri): b for b in document.bundles}
    assert set(bundles) == set(store_graphs) and len(bundles) == 2
    for name, bundle in bundles.items():
        assert problems(store_graphs[name], bundle, one_per_relation=True) == [], name
        _, relations = read_records(bundle)
        assert max(relations.values()) == 1


def test_prov_n_of_one_run_from_the_command_line(sweep_store, tmp_path):
    run_id = sweep_store.runs().column("run_id")[0]
    target = tmp_path / "run.provn"
    result = cli("export", "--store", sweep_store.path, "-f", "provn", "--run", run_id[:6], "-o", target, text=False)
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert text.startswith("document\n") and text.rstrip().endswith("endDocument")
    assert text.count("\n  bundle ") == 1 and run_id in text.split("\n  bundle ", 1)[1].splitlines()[0]
    assert "wasAssociatedWith(" in text and "used(" in text and "wasGeneratedBy(" in text


def test_a_relation_in_both_forms_is_exported_once_keeping_the_qualified_details(run_turtle, tmp_path):
    graph = with_both_forms(rdflib.Graph().parse(data=run_turtle[1], format="turtle"))
    (bundle,) = graph.subjects(RDF.type, CP.RunBundle)
    path = tmp_path / "both-forms"
    store = ox.Store(str(path))
    data = graph.serialize(format="nt", encoding="utf-8")
    store.load(data, format=ox.RdfFormat.N_TRIPLES, to_graph=ox.NamedNode(str(bundle)))
    store.flush()
    del store

    document, warned = read_with_prov(ProvStore(path).export("provn"), format="provn")
    assert warned == []
    (read,) = document.bundles
    assert problems(graph, read, one_per_relation=True) == []
    generations = [r for r in read.get_records() if type(r).__name__ == "ProvGeneration"]
    assert generations and all(str(r.identifier.uri).endswith("/generation") for r in generations)
    # the qualified node's time survived the merge, for each generation that has one (what a DataModule's
    # setup generated has none: Lightning calls it before any logger hook)
    timed = {str(entity) for entity in graph.subjects(PROV.generatedAtTime, None)}
    dated = [r for r in generations if str(r.args[0].uri) in timed]
    assert dated and all(r.get_attribute("prov:time") for r in dated)


# -- 3. a picture of one run -----------------------------------------------------------------------------
def test_dot_picture_folds_epochs_and_values_into_a_readable_graph(sweep_store):
    run = sorted(sweep_store.runs().to_dicts(), key=lambda r: r["name"])[0]
    dot = run_dot(sweep_store, run["run_id"][:8])
    nodes = re.findall(r'^  (n\d+) \[label="((?:[^"\\]|\\.)*)"', dot, flags=re.M)
    labels = [label for _, label in nodes]
    assert len(nodes) < 30  # the run holds over a hundred values, four of them epochs' worth
    assert "epochs 0–1\\n2 epochs" in "".join(labels)
    values = sweep_store.sparql(
        """SELECT ?id (COUNT(DISTINCT ?v) AS ?n) WHERE { ?r <https://w3id.org/cnnprov/ns#runId> ?id .
             ?e <https://w3id.org/cnnprov/ns#partOfRun> ?r . ?v <http://www.w3.org/ns/prov#wasGeneratedBy> ?e ;
             <http://www.w3.org/ns/mls#specifiedBy>/<http://www.w3.org/2000/01/rdf-schema#label> "val_acc" }
           GROUP BY ?id""",
        id=run["run_id"],
    ).column("n")[0]
    assert f"val_acc: {values} values" in "".join(labels)
    assert any(label.startswith(f"run '{run['name']}'") for label in labels)
    assert any("checkpoints (epochs 0–1)" in label for label in labels)
    for relation in ("used", "wasGeneratedBy", "wasAssociatedWith", "partOfRun"):
        assert f'label="{relation}"' in dot


def test_svg_and_png_pictures_from_the_command_line(sweep_store, tmp_path):
    run_id = sweep_store.runs().column("run_id")[0]
    target = tmp_path / "run.svg"
    svg = cli("export", "--store", sweep_store.path, "-f", "svg", "--run", run_id, "-o", target, text=False)
    assert svg.returncode == 0, svg.stderr
    text = (tmp_path / "run.svg").read_text()
    assert "<svg" in text and "epochs 0–1" in text and "val_acc" in text
    png = cli("export", "--store", sweep_store.path, "-f", "png", "--run", run_id, text=False)
    assert png.returncode == 0 and png.stdout.startswith(b"\x89PNG\r\n\x1a\n")


def test_pictures_need_a_run_and_say_when_graphviz_is_missing(sweep_store, tmp_path):
    run_id = sweep_store.runs().column("run_id")[0]
    no_run = cli("export", "--store", sweep_store.path, "-f", "svg", text=False)
    assert no_run.returncode == 1 and b"pass --run ID" in no_run.stderr
    without_graphviz = {"PATH": str(tmp_path)}  # python is run by its full path; `dot` is nowhere
    missing = cli("export", "--store", sweep_store.path, "-f", "svg", "--run", run_id, env=without_graphviz, text=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith(b"cnnprov: error: drawing a SVG picture needs Graphviz's `dot` program")
    dot = cli("export", "--store", sweep_store.path, "-f", "dot", "--run", run_id, env=without_graphviz, text=False)
    assert dot.returncode == 0 and dot.stdout.startswith(b"digraph provenance {")


# -- 4. the ontology picture and the concepts page ----------------------------------------------------------
@pytest.fixture(scope="module")
def ontology() -> rdflib.Graph:
    return rdflib.Graph().parse(ROOT / "ontologies" / "cnnprov.ttl", format="turtle")


def test_ontology_picture_has_every_class_and_subclass_link(ontology):
    dot = ontology_dot()
    names = dict(re.findall(r'^  (n\d+) \[label="([^"]+)"', dot, flags=re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^  (n\d+) -> (n\d+)", dot, flags=re.M)}
    prefixes = {str(CP): "cnnprov:", str(PROV): "prov:", "http://www.w3.org/ns/mls#": "mls:"}

    def short(term) -> str:
        return next(p + str(term)[len(ns):] for ns, p in prefixes.items() if str(term).startswith(ns))

    classes = {c for c in ontology.subjects(RDF.type, OWL.Class) if str(c).startswith(str(CP))}
    parents = {(c, p) for c in classes for p in ontology.objects(c, RDFS.subClassOf) if isinstance(p, URIRef)}
    links = {(short(c), short(p)) for c, p in parents}
    assert {short(c) for c in classes} <= set(names.values())
    assert edges == links and len(links) > len(classes)


def test_docs_ontology_svg_is_the_picture_of_the_ontology(ontology):
    svg = (ROOT / "docs" / "ontology.svg").read_text()
    for cls in ontology.subjects(RDF.type, OWL.Class):
        if str(cls).startswith(str(CP)):
            assert f"cnnprov:{str(cls)[len(str(CP)):]}" in svg, cls
    script = ROOT / "docs" / "make_ontology_picture.py"
    result = subprocess.run([sys.executable, script, "--dot"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == ontology_dot()


def test_concepts_page_turtle_is_valid_and_real(run_turtle):
    page = (ROOT / "docs" / "concepts.md").read_text()
    blocks = re.findall(r"```turtle\n(.*?)```", page, flags=re.S)
    assert blocks
    recorded_predicates = {p for _, p, _ in rdflib.Graph().parse(data=run_turtle[1], format="turtle")}
    for block in blocks:
        graph = rdflib.Graph().parse(data=block, format="turtle")
        assert len(graph) > 20
        assert {p for _, p, _ in graph} <= recorded_predicates  # trimmed from a real export, nothing invented
    assert "ontology.svg" in page and "ProvStore" in page and "oxigraph serve --location" in page and "/sparql" in page


# -- 5. standard PROV other tools accept: W3C's PROV-XML schema, one document in three formats, same bytes --
def _prov_xml_schema():
    from importlib import resources

    from lxml import etree

    schemas = resources.files("prov").joinpath("tests", "schemas")
    with resources.as_file(schemas) as folder:
        return etree.XMLSchema(etree.parse(str(Path(folder) / "prov.xsd")))


@pytest.mark.parametrize("one_run", [True, False])
def test_prov_xml_is_valid_against_w3cs_schema(sweep_store, one_run):
    from lxml import etree

    run = sweep_store.runs().column("run_id")[0] if one_run else None
    xml = sweep_store.export("provxml", run=run)
    schema = _prov_xml_schema()
    schema.validate(etree.fromstring(xml))
    # every identifier an xs:QName (the IRIs cnnprov mints end in an NCName: ``…/run-<uuid>/epoch-3``),
    # every literal's xsi:type a type the schema knows
    assert [error.message for error in schema.error_log][:10] == []
    # a generation's time (PROV-DM), not an entity attribute (the word may be in a recorded diff's text)
    assert not re.search(rb"<[^>]*generatedAtTime", xml)
    names = re.findall(rb'prov:(?:id|ref)="([^"]+)"', xml)
    assert names and all(re.fullmatch(rb"[A-Za-z_][\w.-]*:[A-Za-z_][\w.-]*", n) for n in names)


def test_prov_n_json_and_xml_of_a_run_are_one_document_with_each_relation_once(sweep_store):
    run = sweep_store.runs().column("run_id")[0]
    read = {
        fmt: read_with_prov(sweep_store.export(fmt, run=run), format=prov_format)[0]
        for fmt, prov_format in (("provn", "provn"), ("provjson", "json"), ("provxml", "xml"))
    }
    assert read["provn"] == read["provjson"] == read["provxml"]
    (bundle,) = read["provxml"].bundles
    _, relations = read_records(bundle)
    assert relations and max(relations.values()) == 1
    generations = [r for r in bundle.get_records() if type(r).__name__ == "ProvGeneration"]
    timed = [r for r in generations if r.get_attribute("prov:time")]
    assert len(timed) > 10  # each value's, series' and checkpoint's time is its generation's
    assert not [r for r in bundle.get_records() if r.get_attribute("prov:generatedAtTime")]


EXPORT_FORMATS = ("turtle", "trig", "nquads", "jsonld", "provn", "provjson", "provxml")


def test_every_export_is_the_same_bytes_whatever_the_hash_seed(sweep_store, tmp_path):
    script = (
        "import hashlib, sys; from cnnprov import ProvStore; store = ProvStore(sys.argv[1]); "
        f"print(*[hashlib.sha256(store.export(f)).hexdigest() for f in {EXPORT_FORMATS!r}])"
    )
    digests = {}
    for seed in ("0", "24", "1234"):
        env = {**cli_env(), "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script, str(sweep_store.path)], capture_output=True, text=True, env=env, timeout=300
        )
        assert result.returncode == 0, result.stderr
        digests[seed] = dict(zip(EXPORT_FORMATS, result.stdout.split(), strict=True))
    assert digests["0"] == digests["24"] == digests["1234"]


def test_json_ld_is_compact_with_cnnprovs_context_and_holds_the_quads_of_the_n_quads_export(sweep_store):
    import json

    exported = sweep_store.export("jsonld")
    document = json.loads(exported)
    assert set(document["@context"]) >= {"cnnprov", "prov", "mls", "xsd", "rdfs"}
    text = exported.decode("utf-8")
    assert '"@type"' in text and "rdf-syntax-ns#type" not in text and '"prov:used"' in text
    assert '"http://www.w3.org/ns/prov#' not in text.split('"@graph"', 1)[1]  # no absolute IRIs of PROV-O terms
    graphs = document["@graph"]
    assert len(graphs) == 2 and all("@graph" in g for g in graphs)  # a named graph per run
    read = rdflib.Dataset().parse(data=exported, format="json-ld")
    expected = rdflib.Dataset().parse(data=sweep_store.export("nquads"), format="nquads")
    assert set(read.quads()) == set(expected.quads())


def test_the_documented_prov_read_gives_each_record_once(sweep_store):
    """What docs/concepts.md shows: prov reads cnnprov's PROV-JSON export (or prov_document), not the Turtle."""
    from cnnprov.analysis.prov_export import prov_document

    run = sweep_store.runs().column("run_id")[0]
    document = ProvDocument.deserialize(content=sweep_store.export("provjson", run=run), format="json")
    (bundle,) = document.bundles
    _, relations = read_records(bundle)
    assert any(key[0] == "ProvUsage" for key in relations) and any(key[0] == "ProvGeneration" for key in relations)
    assert max(relations.values()) == 1
    assert document == prov_document(sweep_store, run=run)
    # the Turtle read is the one that gives a usage or generation in both forms twice
    turtle = ProvDocument.deserialize(content=sweep_store.export("turtle", run=run), format="rdf", rdf_format="turtle")
    _, twice = read_records(turtle)
    assert max(twice.values()) == 2


def test_a_learning_rate_series_exports_as_one_entity_with_its_points_as_an_attribute(tmp_path):
    """PROV-N, PROV-JSON and PROV-XML of a run whose rate changed every step: one document, nothing lost."""
    import torch

    from cnnprov import ProvLogger
    from cnnprov.demo import DigitsCNN

    from helpers import tiny_data, tiny_trainer

    class OneCycle(DigitsCNN):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.5, total_steps=8)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    logger = ProvLogger(store=tmp_path / "store")
    tiny_trainer(tmp_path, logger, enable_checkpointing=False).fit(OneCycle(), datamodule=tiny_data())
    store = ProvStore(tmp_path / "store")
    graph = rdflib.Dataset().parse(data=store.export("trig", run=logger.run_id), format="trig")
    (graph,) = [g for g in graph.graphs() if len(g)]
    points = {str(s): o for s, o in graph.subject_objects(CP.seriesPoints)}
    rate_series = set(graph.subjects(RDF.type, CP.LearningRateSeries))
    assert len(rate_series) == 2  # two epochs, one group
    assert len(set(graph.subjects(RDF.type, CP.MetricSeries))) == 4  # train_loss_step, train_acc_step × 2 epochs
    read = {
        fmt: read_with_prov(store.export(fmt, run=logger.run_id), format=prov_format)
        for fmt, prov_format in (("provn", "provn"), ("provjson", "json"), ("provxml", "xml"))
    }
    assert [warned for _, warned in read.values()] == [[], [], []]
    assert read["provn"][0] == read["provjson"][0] == read["provxml"][0]
    (bundle,) = read["provn"][0].bundles
    assert problems(graph, bundle, one_per_relation=True) == []
    for record in bundle.get_records(ProvElement):
        if str(record.identifier.uri) in points:
            (value,) = record.get_attribute("cnnprov:seriesPoints")
            expected = points.pop(str(record.identifier.uri))
            # the points exactly, as a string: PROV-XML's xsi:type can name no datatype but XML Schema's
            assert (value, str(expected.datatype)) == (str(expected), str(CP.pointsJSON))
    assert points == {}
