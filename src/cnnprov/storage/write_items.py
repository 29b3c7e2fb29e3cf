"""What a :class:`~cnnprov.storage.writer.QuadWriter` stores besides plain quads, in order with them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyoxigraph import NamedNode, Quad


@dataclass(frozen=True)
class Replace:
    """Replace every value of ``predicate`` on ``subject`` in ``graph`` (e.g. a run's status)."""

    subject: NamedNode
    predicate: NamedNode
    graph: NamedNode
    objects: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Update:
    """A SPARQL Update the store runs in one transaction, in order with the quads around it."""

    sparql: str


@dataclass(frozen=True)
class Converted:
    """The quads an item converted to, kept in its place until they are stored."""

    quads: list[Quad]
