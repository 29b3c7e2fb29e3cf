"""SPARQL text: RDF terms, data operations and bound parameters, written one way for every store.

Nothing else in cnnprov writes SPARQL around a term by hand. Terms are serialized in
N-Triples syntax (escaped, IRIs validated by pyoxigraph), so user text is never read as SPARQL.

:func:`bind` gives a query its parameters the way pyoxigraph's ``substitutions`` evaluate
them: every occurrence of the variable in the WHERE clause becomes the term (nested groups,
``OPTIONAL``, ``FILTER``, ``GRAPH``, ``MINUS``, and subqueries that project the variable; not
subqueries that do not), and ``VALUES ?var { term }`` at the start of the WHERE clause keeps
the variable in the results, its grouping and its order. It is how a query with parameters
reaches a SPARQL endpoint, which has no standard way to receive bound variables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import pyoxigraph as ox

#: A term that may stand in a quad's position (``None`` in a pattern matches anything).
Term = ox.NamedNode | ox.BlankNode | ox.Literal


class Pattern(NamedTuple):
    """``(subject, predicate, object, graph)`` with ``None`` for any: what ``DELETE WHERE`` removes."""

    subject: ox.NamedNode | None
    predicate: ox.NamedNode | None
    object: Term | None
    graph: ox.NamedNode | ox.DefaultGraph | None


def insert_operation(quads: Sequence[ox.Quad]) -> str:
    """``INSERT DATA`` of ``quads``, grouped by graph."""
    return _data_operation("INSERT", quads)


def delete_data_operation(quads: Sequence[ox.Quad]) -> str:
    """``DELETE DATA`` of ``quads``, grouped by graph."""
    return _data_operation("DELETE", quads)


def _data_operation(keyword: str, quads: Sequence[ox.Quad]) -> str:
    by_graph: dict[ox.NamedNode | ox.BlankNode | ox.DefaultGraph, list[ox.Triple]] = {}
    for quad in quads:
        by_graph.setdefault(quad.graph_name, []).append(quad.triple)
    parts = []
    for graph, triples in by_graph.items():
        text = _harden((ox.serialize(triples, format=ox.RdfFormat.N_TRIPLES) or b"").decode("utf-8"))
        if isinstance(graph, ox.DefaultGraph):
            parts.append(text)
        else:
            parts.append(f"GRAPH {term_text(graph)} {{\n{text}}}\n")
    return f"{keyword} DATA {{\n" + "".join(parts) + "}"


def delete_operation(item: ox.Quad | Pattern) -> str:
    """``DELETE DATA`` of a quad, or ``DELETE WHERE`` of a :class:`Pattern` (``None`` terms match anything)."""
    if isinstance(item, Pattern):
        subject, predicate, obj, graph = item
        pattern = " ".join(
            term_text(term) if term is not None else f"?{name}"
            for name, term in (("s", subject), ("p", predicate), ("o", obj))
        )
        if graph is None:
            return f"DELETE WHERE {{ GRAPH ?g {{ {pattern} }} }}"
        if isinstance(graph, ox.DefaultGraph):
            return f"DELETE WHERE {{ {pattern} }}"
        return f"DELETE WHERE {{ GRAPH {term_text(graph)} {{ {pattern} }} }}"
    triple = " ".join(term_text(term) for term in (item.subject, item.predicate, item.object))
    if isinstance(item.graph_name, ox.DefaultGraph):
        return f"DELETE DATA {{ {triple} . }}"
    return f"DELETE DATA {{ GRAPH {term_text(item.graph_name)} {{ {triple} . }} }}"


def replace_operation(
    subject: ox.NamedNode, predicate: ox.NamedNode, graph: ox.NamedNode, objects: Iterable[Term] = ()
) -> str:
    """One request that replaces every value of ``predicate`` on ``subject`` in ``graph``."""
    operations = [delete_operation(Pattern(subject, predicate, None, graph))]
    inserts = [ox.Quad(subject, predicate, obj, graph) for obj in objects]
    if inserts:
        operations.append(insert_operation(inserts))
    return " ;\n".join(operations)


def quads_query(
    subject: Term | None, predicate: ox.NamedNode | None, obj: Term | None, graph: object = None
) -> tuple[str, list[str]]:
    """A SELECT for the quads matching a pattern, and the names of the positions it projects.

    ``graph=None`` searches the named graphs only (cnnprov writes nothing else).
    """
    positions = (("s", subject), ("p", predicate), ("o", obj))
    pattern = " ".join(term_text(term) if term is not None else f"?{name}" for name, term in positions)
    if isinstance(graph, ox.NamedNode):
        where = f"GRAPH {term_text(graph)} {{ {pattern} }}"
    elif isinstance(graph, ox.DefaultGraph):
        where = pattern
    elif graph is None:
        where = f"GRAPH ?g {{ {pattern} }}"
    else:
        raise NotImplementedError(f"cannot search the graph {graph!r} over SPARQL")
    names = [name for name, term in positions if term is None] + (["g"] if graph is None else [])
    projection = " ".join(f"?{name}" for name in names) or "(1 AS ?found)"
    return f"SELECT {projection} WHERE {{ {where} }}", names


def term_text(term: object) -> str:
    """An RDF term as SPARQL text: N-Triples syntax, escaped so that no endpoint reads it otherwise."""
    if isinstance(term, ox.NamedNode):
        return str(term)  # pyoxigraph refuses IRIs with spaces, quotes, '<', '>', '{', '}' or '\'
    if isinstance(term, ox.Literal):
        return _harden(str(term))
    raise TypeError(f"cannot send a {type(term).__name__} to a SPARQL endpoint as a bound value")


def bind_terms(query: str, substitutions: Mapping[ox.Variable, Term]) -> str:
    """:func:`bind` with pyoxigraph variables and terms."""
    return bind(query, {variable.value: term_text(term) for variable, term in substitutions.items()})

# An escaped backslash followed by "u" reads as a \u escape to a parser that decodes \u
# sequences before parsing (SPARQL 1.1 allows it); "u" itself is then written as \u0075.
_ESCAPES = re.compile(r"\\\\([uU])|\\.", re.S)


def _harden(text: str) -> str:
    if "\\\\u" not in text and "\\\\U" not in text:
        return text

    def escape(match: re.Match[str]) -> str:
        if not match.group(1):
            return match.group(0)
        return "\\\\\\u0075" if match.group(1) == "u" else "\\\\\\u0055"

    return _ESCAPES.sub(escape, text)


_TOKENS = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n\r]*)
    | (?P<iri><[^<>"{}|^`\\\x00-\x20]*>)
    | (?P<string>\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\"|'''(?:[^'\\]|\\.|'(?!''))*'''
                 |"(?:[^"\\\n\r]|\\.)*"|'(?:[^'\\\n\r]|\\.)*')
    | (?P<var>[?$][\w\u00B7\u0300-\u036F\u203F-\u2040]+)
    | (?P<word>[^\s{}()\[\];,"'<>\#?$=!|&*+/^]+)
    | (?P<punct>.)
    """,
    re.X | re.S,
)
_FORMS = {"SELECT", "ASK", "CONSTRUCT", "DESCRIBE"}


def bind(query: str, terms: dict[str, str]) -> str:
    """``query`` with variables bound to terms (already SPARQL text, see :func:`term_text`).

    Mirrors pyoxigraph's ``substitutions``: each variable is replaced by its term throughout
    the WHERE clause (but not inside a subquery that does not project it), and bound with
    ``VALUES`` at the start of the WHERE clause, so it is still projected, grouped and ordered by.

    Raises:
        RuntimeError: a variable the query does not project, or a query that is not SELECT or ASK.
    """
    tokens = [[m.lastgroup or "", m.group()] for m in _TOKENS.finditer(query)]
    form = next((i for i, (kind, text) in enumerate(tokens) if kind == "word" and text.upper() in _FORMS), None)
    if form is None or tokens[form][1].upper() not in ("SELECT", "ASK"):
        raise RuntimeError("only SELECT and ASK queries take bound variables")
    start = _first_brace(tokens, form + 1)
    if tokens[form][1].upper() == "SELECT":
        projected = _projection(tokens, form + 1, start)
        for name in terms:
            if projected is not None and name not in projected:
                raise RuntimeError(f"The SPARQL query does not contains variable ?{name} in its SELECT projection")
    inserts = {start: " " + _values(terms) + "\n"}
    _substitute(tokens, start, _matching(tokens, start), terms, inserts)
    return "".join(text + inserts.get(i, "") for i, (_, text) in enumerate(tokens))


def mentions_keyword(query: str, keyword: str) -> bool:
    """Whether ``keyword`` (e.g. ``SERVICE``) is a keyword of ``query``: not inside a string, IRI or comment."""
    upper = keyword.upper()
    return any(m.lastgroup == "word" and m.group().upper() == upper for m in _TOKENS.finditer(query))


def _values(terms: dict[str, str]) -> str:
    names = " ".join(f"?{name}" for name in terms)
    return f"VALUES ({names}) {{ ({' '.join(terms.values())}) }}"


def _significant(tokens: list[list[str]], index: int) -> int:
    while index < len(tokens) and tokens[index][0] in ("space", "comment"):
        index += 1
    return index


def _first_brace(tokens: list[list[str]], index: int) -> int:
    depth = 0
    for i in range(index, len(tokens)):
        text = tokens[i][1]
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif text == "{" and depth == 0:
            return i
    raise SyntaxError("the query has no WHERE clause ('{' expected)")


def _matching(tokens: list[list[str]], index: int) -> int:
    depth = 0
    for i in range(index, len(tokens)):
        if tokens[i][0] != "punct":
            continue
        if tokens[i][1] == "{":
            depth += 1
        elif tokens[i][1] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise SyntaxError("unbalanced braces in the query ('}' expected)")


def _projection(tokens: list[list[str]], start: int, end: int) -> set[str] | None:
    """Variables a SELECT clause projects (``None`` for ``*``)."""
    names: set[str] = set()
    depth = 0
    previous = ""
    for kind, text in tokens[start:end]:
        if kind in ("space", "comment"):
            continue
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif text == "*" and depth == 0:
            return None
        elif kind == "var" and (depth == 0 or previous == "AS"):
            names.add(text[1:])
        previous = text.upper()
    return names


def _substitute(tokens: list[list[str]], start: int, end: int, terms: dict[str, str], inserts: dict[int, str]) -> None:
    """Replace the variables of ``terms`` between the braces at ``start`` and ``end``; text to add
    after a token goes to ``inserts`` (by token index), so that indexes stay valid."""
    i = start + 1
    previous = ""
    values_header = False
    while i < end:
        kind, text = tokens[i]
        if kind in ("space", "comment"):
            i += 1
            continue
        if text == "{" and kind == "punct":
            after = _significant(tokens, i + 1)
            if after < end and tokens[after][0] == "word" and tokens[after][1].upper() == "SELECT":
                # a subquery: its own scope, entered only for the variables it projects
                group_end = _matching(tokens, i)
                where = _first_brace(tokens, after + 1)
                projected = _projection(tokens, after + 1, where)
                inner = {n: t for n, t in terms.items() if projected is None or n in projected}
                if inner:
                    _substitute(tokens, where, _matching(tokens, where), inner, inserts)
                    inserts[where] = " " + _values(inner) + "\n"
                i, previous = group_end + 1, "}"
                continue
            if values_header:  # inline data: terms only
                values_header = False
                i, previous = _matching(tokens, i) + 1, "}"
                continue
        if kind == "word" and text.upper() == "VALUES":
            values_header = True
        elif kind == "var" and text[1:] in terms and not values_header and previous != "AS":
            tokens[i] = ["term", terms[text[1:]]]
        previous = text.upper()
        i += 1


