"""A crashed run's summaries, rewritten from the values and epochs it stored.

Values and the update of their summaries are separate writes, and summaries are rewritten only
now and then while a run trains (``SUMMARY_INTERVAL_S``): a process killed between the two leaves
summaries that trail the values (``best-runs`` reading an old best, ``runs`` too few epochs). The
next writer that opens the store records such a run as crashed (:mod:`cnnprov.storage.crashes`)
and, through :func:`rewrite_summaries`, folds the run's stored values and epochs into its
summaries again.
"""

from __future__ import annotations

import pyoxigraph as ox

from cnnprov.capture.resume import fold_values, read_epochs
from cnnprov.capture.summaries import EPOCH_PROPERTIES, EpochStatistics, epoch_statistics_quads, summary_node
from cnnprov.rdf.sparql import Pattern, delete_operation, insert_operation
from cnnprov.rdf.vocab import CNNPROV_NS, MLS_NS
from cnnprov.storage.local_handles import LocalReader


def rewrite_summaries(store: ox.Store, run: ox.NamedNode, graph: ox.NamedNode) -> None:
    """Replace every measure summary of ``run`` (in its graph) by one folded from its stored values,
    and its epoch statistics by those of its stored epochs."""
    summaries = fold_values(LocalReader(store), run, graph)
    rows = store.query(
        f"""SELECT ?g ?measure ?name WHERE {{ GRAPH ?g {{ ?measure a <{MLS_NS}EvaluationMeasure> ;
              <http://www.w3.org/2000/01/rdf-schema#label> ?name }} }}""",
        substitutions={ox.Variable("g"): graph},
    )
    assert isinstance(rows, ox.QuerySolutions)
    measures = {row["name"].value: row["measure"] for row in rows}
    quads = [
        quad
        for name, summary in summaries.items()
        if name in measures
        for quad in summary.quads(summary_node(run, name), run, measures[name], graph)
    ]
    starts, seconds = read_epochs(LocalReader(store), run, graph)
    if starts:
        quads += epoch_statistics_quads(run, graph, EpochStatistics(len(starts), seconds).snapshot())
    operations = [
        f"DELETE WHERE {{ GRAPH <{graph.value}> {{ ?summary a <{CNNPROV_NS}MetricSummary> ; "
        f"<{CNNPROV_NS}summaryOf> <{run.value}> ; ?p ?o }} }}"
    ]
    if starts:
        operations += [delete_operation(Pattern(run, prop, None, graph)) for prop in EPOCH_PROPERTIES]
    if quads:
        operations.append(insert_operation(quads))
    store.update(" ;\n".join(operations))  # one transaction
