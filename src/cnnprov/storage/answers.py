"""Answers of the read endpoint, serialized within a time limit.

pyoxigraph cannot cancel a query. Its solutions are produced lazily, though, so the endpoint
takes them one by one and gives up once the limit has passed: the query is abandoned (its
iterator, and with it its hold on the store, is let go of) and the client is told why. A query
that must see every solution before its first (an aggregate, ORDER BY) runs to its first
solution before the limit can be checked.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pyoxigraph as ox

#: Seconds a query of the live endpoint may take (``$CNNPROV_QUERY_TIME_LIMIT_S`` overrides it).
DEFAULT_TIME_LIMIT_S = 5.0
TIME_LIMIT_ENV = "CNNPROV_QUERY_TIME_LIMIT_S"
_XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
_RDF_LANG_STRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"
_CHECK_EVERY = 64  # solutions between two looks at the clock


class QueryTimeLimitError(Exception):
    """A query ran past the endpoint's time limit and was abandoned."""


def time_limit_s(default: float = DEFAULT_TIME_LIMIT_S) -> float:
    """The time limit: ``$CNNPROV_QUERY_TIME_LIMIT_S`` when set to a positive number, else ``default``."""
    try:
        value = float(os.environ.get(TIME_LIMIT_ENV, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def serialize_within(result: Any, limit_s: float) -> tuple[bytes, str]:
    """The body and content type of a query's answer; raises :class:`QueryTimeLimitError` past ``limit_s``."""
    deadline = time.monotonic() + limit_s
    if isinstance(result, ox.QueryBoolean):
        return result.serialize(format=ox.QueryResultsFormat.JSON) or b"", "application/sparql-results+json"
    if isinstance(result, ox.QueryTriples):
        triples = _taken(result, deadline, limit_s)
        return ox.serialize(triples, format=ox.RdfFormat.N_TRIPLES) or b"", "application/n-triples"
    names = [variable.value for variable in result.variables]
    rows = []
    for solution in _taken(result, deadline, limit_s):
        row = {}
        for index, name in enumerate(names):
            term = solution[index]
            if term is not None:
                row[name] = _term(term)
        rows.append(row)
    body = {"head": {"vars": names}, "results": {"bindings": rows}}
    return json.dumps(body, ensure_ascii=False).encode("utf-8"), "application/sparql-results+json"


def _taken(items: Any, deadline: float, limit_s: float) -> list[Any]:
    taken = []
    for count, item in enumerate(items, start=1):
        taken.append(item)
        if count % _CHECK_EVERY == 0 and time.monotonic() > deadline:
            raise QueryTimeLimitError(
                f"the query ran past this endpoint's time limit of {limit_s:g} s and was abandoned: "
                f"ask for less (a LIMIT, a narrower pattern), or set ${TIME_LIMIT_ENV} in the serving process"
            )
    return taken


def _term(term: Any) -> dict[str, Any]:
    """A term in the SPARQL 1.1 Query Results JSON format."""
    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.BlankNode):
        return {"type": "bnode", "value": term.value}
    if isinstance(term, ox.Literal):
        answer: dict[str, Any] = {"type": "literal", "value": term.value}
        if term.language:
            answer["xml:lang"] = term.language
        elif term.datatype.value not in (_XSD_STRING, _RDF_LANG_STRING):
            answer["datatype"] = term.datatype.value
        return answer
    if isinstance(term, ox.Triple):
        return {
            "type": "triple",
            "value": {"subject": _term(term.subject), "predicate": _term(term.predicate), "object": _term(term.object)},
        }
    raise TypeError(f"not an RDF term: {term!r}")
