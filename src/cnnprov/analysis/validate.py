"""Check recorded runs against the SHACL shapes of a well-formed record.

The shapes are data: ``ontologies/cnnprov-shapes.ttl`` (shipped in the package)
says what a run's named graph holds — a start, agents, settings, epochs in
order that start before they end, metric values with a measure and a numeric
value, checkpoints with a SHA-256, and more. Each graph is validated on its
own with pySHACL and no inference: queries rely on the types and values the
recorder wrote, so the shapes check exactly those.

Example::

    from cnnprov.analysis.validate import validate_store

    report = validate_store("provenance")
    print(report.text())          # one line per run, then each broken rule
    assert report.conforms

Or an rdflib graph of one run, such as a Turtle export::

    import rdflib
    from cnnprov.analysis.validate import validate_graph

    graph = rdflib.Graph().parse("run.ttl")
    print(validate_graph(graph).text())
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from cnnprov.analysis.validation_report import Finding, RunReport, ValidationReport, one_line
from cnnprov.rdf.vocab import CNNPROV_NS, PREFIXES, PROV_NS, RDFS_NS

if TYPE_CHECKING:  # rdflib and pyshacl load when a validation runs, not when the CLI starts
    import pyoxigraph
    import rdflib

    from cnnprov.analysis.provstore import ProvStore

#: Namespace of the shapes and their rules (``cnnprovsh:``).
SHAPES_NS = "https://w3id.org/cnnprov/shapes#"
#: The shapes file, relative to the package.
SHAPES_RESOURCE = ("ontologies", "cnnprov-shapes.ttl")
#: The rule a graph breaks when it records no run at all (checked here: SHACL needs a node to target).
GRAPH_RECORDS_A_RUN = SHAPES_NS + "GraphRecordsARun"

_SH = "http://www.w3.org/ns/shacl#"
_SEVERITIES = {_SH + "Violation": "violation", _SH + "Warning": "warning", _SH + "Info": "info"}
_PREFIXES = {**PREFIXES, "cnnprovsh": SHAPES_NS, "sh": _SH}


# -- shapes --------------------------------------------------------------------------
def shapes_text() -> str:
    """The Turtle text of the shapes file shipped with the package."""
    folder, name = SHAPES_RESOURCE  # Traversable.joinpath takes one name before Python 3.11
    return (resources.files("cnnprov") / folder / name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def shapes_graph() -> rdflib.Graph:
    """The shapes as an rdflib graph (parsed once)."""
    import rdflib

    return rdflib.Graph().parse(data=shapes_text(), format="turtle")


# -- one graph -----------------------------------------------------------------------
def validate_graph(graph: rdflib.Graph, name: str | None = None) -> RunReport:
    """Validate the record of one run, held in an rdflib graph.

    Args:
        graph: the run's triples (one named graph of a store, or a Turtle export
            of one run). It is read, not changed.
        name: what to call the graph in the report (default: its run bundle's
            IRI, else the graph's identifier).

    Returns:
        A :class:`RunReport`; ``report.conforms`` is False when any rule is violated.
    """
    import rdflib
    from pyshacl import validate
    from rdflib.namespace import RDF

    if isinstance(graph, rdflib.ConjunctiveGraph) or not isinstance(graph, rdflib.Graph):
        raise TypeError(
            "validate_graph takes the rdflib Graph of one run; for a dataset of many runs, "
            "pass each of its graphs (dataset.graphs()), or use validate_store"
        )
    cp = rdflib.Namespace(CNNPROV_NS)
    bundles = sorted(str(b) for b in graph.subjects(RDF.type, cp.RunBundle))
    # Subjects are IRIs or blank nodes, which rdflib orders; its annotations only promise a Node.
    runs = sorted(cast("Iterator[rdflib.term.Identifier]", graph.subjects(RDF.type, cp.TrainingRun)))
    report = RunReport(graph=name or (bundles[0] if bundles else str(graph.identifier)), triples=len(graph))
    studies = sorted(cast("Iterator[rdflib.term.Identifier]", graph.subjects(RDF.type, cp.HyperparameterStudy)))
    label = rdflib.URIRef(RDFS_NS + "label")
    if runs:
        run = runs[0]
        run_id, run_name = graph.value(run, cp.runId), graph.value(run, label)
        report.run_id = str(run_id) if run_id is not None else str(run)
        report.name = str(run_name) if run_name is not None else None
    elif studies:
        report.kind = "study"
        report.name = str(graph.value(studies[0], label) or studies[0])
    else:
        report.kind = "graph"
        if not any(graph.subjects(RDF.type, rdflib.URIRef(PROV_NS + "Bundle"))):
            report.findings.append(
                Finding(
                    "violation",
                    report.graph,
                    _short(GRAPH_RECORDS_A_RUN),
                    "the graph records no cnnprov:TrainingRun and is no other prov:Bundle: each graph of a "
                    "store holds the record of one run (or of a study)",
                )
            )
    _conforms, results, _text = validate(
        graph,
        shacl_graph=shapes_graph(),
        inference="none",
        allow_warnings=True,
        inplace=True,  # no inference, so nothing is added to the caller's graph
    )
    if not isinstance(results, rdflib.Graph):  # pySHACL could not run the shapes: a bug, not a finding
        raise RuntimeError(f"the shapes in {'/'.join(SHAPES_RESOURCE)} cannot be applied: {results}")
    report.findings.extend(_findings(results))
    report.findings.sort(key=lambda f: (f.severity != "violation", f.node, f.rule))
    return report


def _findings(results: rdflib.Graph) -> Iterator[Finding]:
    import rdflib
    from rdflib.namespace import RDF, SH

    for result in results.subjects(RDF.type, SH.ValidationResult):
        focus = results.value(result, SH.focusNode)
        severity = _SEVERITIES.get(str(results.value(result, SH.resultSeverity)), "violation")
        constraint = results.value(result, SH.sourceConstraint)
        shape = results.value(result, SH.sourceShape)
        if isinstance(constraint, rdflib.URIRef):
            rule = _short(constraint)
        elif isinstance(shape, rdflib.URIRef):
            rule = _short(shape)
        else:
            rule = _short(results.value(result, SH.sourceConstraintComponent))
        messages = sorted(str(m) for m in results.objects(result, SH.resultMessage))
        path = results.value(result, SH.resultPath)
        value = results.value(result, SH.value)
        yield Finding(
            severity=severity,
            node=_node(focus),
            rule=rule,
            message="; ".join(messages) or rule,
            path=_path(results, path) if path is not None else None,
            value=_turtle(value) if value is not None else None,
        )


def _node(term: Any) -> str:
    import rdflib

    return f"_:{term}" if isinstance(term, rdflib.BNode) else str(term)


def _short(term: Any) -> str:
    text = str(term)
    for prefix, namespace in _PREFIXES.items():
        if text.startswith(namespace) and len(text) > len(namespace):
            return f"{prefix}:{text[len(namespace):]}"
    return f"<{text}>"


def _path(results: rdflib.Graph, path: Any) -> str:
    import rdflib
    from rdflib.namespace import SH

    if isinstance(path, rdflib.BNode):
        inverse = results.value(path, SH.inversePath)
        if inverse is not None:
            return "^" + _short(inverse)
        return "a property path"
    return _short(path)


def _turtle(term: Any) -> str:
    import rdflib

    if isinstance(term, rdflib.Literal):
        datatype = f"^^{_short(term.datatype)}" if term.datatype is not None else ""
        return f'"{one_line(str(term))}"{datatype}'
    if isinstance(term, rdflib.BNode):
        return f"_:{term}"
    return f"<{term}>"


# -- a store -----------------------------------------------------------------------------
_GRAPHS_QUERY = f"""
SELECT ?graph ?id ?start WHERE {{
  GRAPH ?graph {{ }}
  OPTIONAL {{
    GRAPH ?graph {{
      ?run a <{CNNPROV_NS}TrainingRun> .
      OPTIONAL {{ ?run <{CNNPROV_NS}runId> ?id }}
      OPTIONAL {{ ?run <http://www.w3.org/ns/prov#startedAtTime> ?start }}
    }}
  }}
}}
"""


def run_graphs(store: ProvStore | str | os.PathLike | None = None) -> list[tuple[str, str | None]]:
    """Every named graph of a store with the id of the run it records (``None`` if it names none),
    runs in the order they started."""
    reader = _reader(store)
    with reader.reading() as opened:
        rows = [
            (row["graph"].value, _text(row["id"]), _text(row["start"]))
            for row in cast("pyoxigraph.QuerySolutions", opened.query(_GRAPHS_QUERY, use_default_graph_as_union=True))
        ]
    runs: dict[str, tuple[str | None, str]] = {}
    for graph, run_id, start in rows:
        runs.setdefault(graph, (run_id, start or ""))
    return [(graph, run_id) for graph, (run_id, _) in sorted(runs.items(), key=lambda item: (item[1][1], item[0]))]


def _text(term: Any) -> str | None:
    return None if term is None else term.value


def iter_validate_store(
    store: ProvStore | str | os.PathLike | None = None, run: str | None = None
) -> Iterator[tuple[int, int, RunReport]]:
    """Validate each run graph of a store in turn, yielding ``(number, total, report)`` as each is done.

    Args:
        store: a :class:`~cnnprov.ProvStore` or a store directory (default: ``$CNNPROV_STORE`` or
            ``./provenance``). A store that a training process holds is read through that process.
        run: only the run with this id (or a unique start of it).
    """
    reader = _reader(store)
    graphs = run_graphs(reader)
    if run is not None:
        run_id = reader.resolve_run(run)
        graphs = [(graph, rid) for graph, rid in graphs if rid == run_id]
    for number, (graph, _run_id) in enumerate(graphs, start=1):
        yield number, len(graphs), validate_graph(_load_graph(reader, graph), name=graph)


def validate_store(
    store: ProvStore | str | os.PathLike | None = None,
    run: str | None = None,
    progress: Callable[[int, int, RunReport], None] | None = None,
) -> ValidationReport:
    """Validate every run graph of a store (or one run) against the shapes.

    Args:
        store: a :class:`~cnnprov.ProvStore` or a store directory.
        run: only the run with this id (or a unique start of it).
        progress: called with ``(number, total, report)`` after each run.
    """
    report = ValidationReport()
    for number, total, run_report in iter_validate_store(store, run):
        report.runs.append(run_report)
        if progress is not None:
            progress(number, total, run_report)
    return report


def _reader(store: ProvStore | str | os.PathLike | None) -> ProvStore:
    from cnnprov.analysis.provstore import ProvStore

    return store if isinstance(store, ProvStore) else ProvStore(store)


def _load_graph(reader: ProvStore, graph: str) -> rdflib.Graph:
    """One named graph as an in-memory rdflib graph (the store is held only while it is read).

    pySHACL walks the graph node by node, which an in-memory graph answers fastest.
    """
    import pyoxigraph as ox
    import rdflib

    with reader.reading() as opened:
        quads = list(opened.quads_for_pattern(None, None, None, ox.NamedNode(graph)))
    result = rdflib.Graph(identifier=rdflib.URIRef(graph))
    convert = _RdflibTerms()
    result.addN((convert(q.subject), convert(q.predicate), convert(q.object), result) for q in quads)
    return result


class _RdflibTerms:
    """pyoxigraph terms → rdflib terms, each distinct term converted once.

    RDF 1.1 makes "x" and "x"^^xsd:string one literal; rdflib keeps them apart,
    so strings become plain literals, as rdflib's own parsers make them.
    """

    _XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"

    def __init__(self) -> None:
        self._seen: dict[Any, Any] = {}

    def __call__(self, term: Any) -> Any:
        converted = self._seen.get(term)
        if converted is None:
            converted = self._seen[term] = self._convert(term)
        return converted

    def _convert(self, term: Any) -> Any:
        import pyoxigraph as ox
        import rdflib

        if isinstance(term, ox.NamedNode):
            return rdflib.URIRef(term.value)
        if isinstance(term, ox.BlankNode):
            return rdflib.BNode(term.value)
        if isinstance(term, ox.Literal):
            if term.language:
                return rdflib.Literal(term.value, lang=term.language)
            if term.datatype.value == self._XSD_STRING:
                return rdflib.Literal(term.value)
            return rdflib.Literal(term.value, datatype=rdflib.URIRef(term.datatype.value))
        raise TypeError(f"a run graph holds a term rdflib cannot represent: {term!r}")
