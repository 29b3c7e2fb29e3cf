"""PROV-CONSTRAINTS that apply to cnnprov's records, checked with SPARQL over a whole store.

W3C's PROV-CONSTRAINTS says when a provenance record is *valid*: events happen in an order
that makes sense (an activity starts before it ends, what it generates is generated while it
runs, an entity is generated before it is used and after what it derives from), an entity is
generated once, and a bundle is a bundle. Each check is one SPARQL query in
``ontologies/constraints/`` that selects the nodes breaking it (``?node`` and a ``?detail``
sentence), run over the union of the run graphs, so it also sees what crosses them (a run
informed by its Optuna study).

Example::

    from cnnprov import ProvStore
    from cnnprov.analysis.constraints import check_constraints

    for violation in check_constraints(ProvStore("provenance")):
        print(violation)
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from cnnprov.analysis.provstore import ProvStore

CONSTRAINTS_FOLDER = ("ontologies", "constraints")


@dataclass(frozen=True)
class ConstraintViolation:
    """One node that breaks one constraint."""

    constraint: str  # the query's name, e.g. "generation-within-activity"
    node: str
    detail: str

    def __str__(self) -> str:
        return f"{self.constraint}: <{self.node}> {self.detail}"


def constraint_queries() -> dict[str, str]:
    """Each constraint's name and its SPARQL text, by name."""
    folder = resources.files("cnnprov") / CONSTRAINTS_FOLDER[0] / CONSTRAINTS_FOLDER[1]
    return {
        entry.name.removesuffix(".rq"): entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".rq")
    }


def check_constraints(store: ProvStore) -> list[ConstraintViolation]:
    """Every violation of the constraints in the store (none in a valid one)."""
    found = []
    with store:  # one open store for all the checks
        for name, text in constraint_queries().items():
            for row in store.sparql(text):
                found.append(ConstraintViolation(name, str(row["node"]), str(row["detail"])))
    return found
