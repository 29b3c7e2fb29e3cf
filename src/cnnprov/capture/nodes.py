"""The IRIs of a run's records, minted in one place so that the records and the recorder's numbering agree."""

from __future__ import annotations

from pyoxigraph import NamedNode

from cnnprov.rdf.vocab import child, iri, kind_segment


def run_node(base: str, run_id: str) -> NamedNode:
    """The IRI of the run ``run_id`` minted under ``base``: ``{base}run-{id}``."""
    return iri(base, kind_segment("run", run_id))


def run_bundle_node(base: str, run_id: str) -> NamedNode:
    """The named graph (a PROV bundle) that holds the run's records: ``{base}bundle/run-{id}``."""
    return iri(base, "bundle", kind_segment("run", run_id))


def epoch_node(run: NamedNode, index: int) -> NamedNode:
    return child(run, "epoch", str(index))


def epoch_prefix(run: NamedNode) -> str:
    """The text every epoch IRI of ``run`` starts with: its index follows (``…/epoch-``, or ``…/epoch/``
    in a run an earlier version recorded)."""
    return child(run, "epoch", "").value


def attempt_node(run: NamedNode, index: int) -> NamedNode:
    return child(run, "attempt", str(index))


def checkpoint_node(run: NamedNode, number: int | str) -> NamedNode:
    """The run's ``number``-th checkpoint, or its ``"input"`` one (a file no stored run wrote)."""
    return child(run, "checkpoint", str(number))


def user_association_node(run: NamedNode) -> NamedNode:
    return child(run, "association", "user")


def optimizer_node(run: NamedNode, index: int) -> NamedNode:
    return child(run, "optimizer", str(index))


def group_node(optimizer: NamedNode, index: int) -> NamedNode:
    return child(optimizer, "group", str(index))


def setting_node(owner: NamedNode, key: str) -> NamedNode:
    return child(owner, "setting", key)
