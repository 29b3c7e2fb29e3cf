"""Runs whose process died: found when the next writer opens the store, and recorded as crashed.

A process killed with ``kill -9`` (or by the kernel, or a power cut) records no end: its run stays
"running" in the record. The next process that opens the store for writing looks for runs and
attempts that say "running" whose process on this host is gone, and records the truth in their
own graphs: status ``crashed`` and, as the end time, the time of the last record the run wrote.
A run on another host cannot be checked from here and is left as it is.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import pyoxigraph as ox

from cnnprov.rdf.sparql import replace_operation
from cnnprov.rdf.vocab import CNNPROV, CNNPROV_NS, PROV, PROV_NS, RDF, string_literal
from cnnprov.storage.advertisement import is_process_alive

log = logging.getLogger(__name__)

CRASHED = "crashed"

#: What else is put right in a run found crashed, after its status: ``repair(store, run, graph)``.
#: The capture layer registers the rewrite of a run's summaries from its stored values, which a
#: kill between a write of values and the update of their summaries leaves behind.
_REPAIRS: list[Callable[[ox.Store, ox.NamedNode, ox.NamedNode], None]] = []


def register_repair(repair: Callable[[ox.Store, ox.NamedNode, ox.NamedNode], None]) -> None:
    """Run ``repair`` on every run :func:`record_crashed_runs` records as crashed (once per callable)."""
    if repair not in _REPAIRS:
        _REPAIRS.append(repair)

# Selective: only nodes whose status is "running" (a handful in a store of thousands of runs).
_RUNNING = f"""
SELECT ?g ?node ?host ?pid WHERE {{
  GRAPH ?g {{ ?node <{CNNPROV_NS}status> "running" ; <{CNNPROV_NS}hostname> ?host ; <{CNNPROV_NS}processId> ?pid }}
}}
"""
# The time of the last record in one graph: asked only of a run found crashed.
_LAST_RECORD = f"""
SELECT (MAX(?at) AS ?last) WHERE {{
  {{ ?x <{PROV_NS}startedAtTime> ?at }} UNION {{ ?x <{PROV_NS}endedAtTime> ?at }}
  UNION {{ ?x <{PROV_NS}generatedAtTime> ?at }}
}}
"""


def record_crashed_runs(store: ox.Store) -> list[str]:
    """Record the runs (and attempts) left "running" by a process of this host that is gone.

    Returns the IRIs of the nodes it recorded as crashed. Each is one atomic update of its graph.
    """
    here, me = socket.gethostname(), os.getpid()
    crashed = []
    running = store.query(_RUNNING)
    assert isinstance(running, ox.QuerySolutions)
    for row in list(running):
        host, pid = row["host"].value, row["pid"].value
        if host != here or str(pid) == str(me) or is_process_alive(host, pid) is not False:
            continue
        node, graph = row["node"], row["g"]
        updates = [replace_operation(node, CNNPROV.status, graph, [string_literal(CRASHED)])]
        if not list(store.quads_for_pattern(node, PROV.endedAtTime, None, graph)):
            last = store.query(_LAST_RECORD, default_graph=graph)
            assert isinstance(last, ox.QuerySolutions)
            (found,) = list(last)
            if found["last"] is not None:
                updates.append(replace_operation(node, PROV.endedAtTime, graph, [found["last"]]))
        store.update(" ;\n".join(updates))
        crashed.append(node.value)
        if isinstance(node, ox.NamedNode) and isinstance(graph, ox.NamedNode) and _is_run(store, node, graph):
            for repair in _REPAIRS:
                try:
                    repair(store, node, graph)
                except Exception as error:  # the status is recorded all the same
                    # the text only: the error's traceback holds the store open
                    log.warning("cnnprov could not bring the crashed run %s up to date: %s", node.value, str(error))
    if crashed:
        log.warning(
            "cnnprov recorded %d run(s) and attempt(s) as crashed: their process ended without recording an end",
            len(crashed),
        )
    return crashed


def _is_run(store: ox.Store, node: ox.NamedNode, graph: ox.NamedNode) -> bool:
    return any(True for _ in store.quads_for_pattern(node, RDF.type, CNNPROV.TrainingRun, graph))
