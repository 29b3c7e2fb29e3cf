"""SPARQL text: RDF terms, data operations and bound parameters, written one way for every store.

Nothing else in cnnprov writes SPARQL around a term by hand. Terms are serialized in
N-Triples syntax (escaped, IRIs validated by pyoxigraph), so user text is never read as SPARQL.

:func:`bind_values` gives a query its parameters the standard way, with SPARQL 1.1 ``VALUES``
blocks: a query declares a parameter ``?name`` in a parameter block,
``VALUES (?metric ?order) { ("val_acc" "max") }``, that opens its WHERE clause (and the WHERE
clause of each subquery that uses the parameter: a subquery is evaluated on its own, so a
block outside it does not reach it), and binding replaces the one row of every block that names
only parameters by the bound terms (``UNDEF`` for a parameter left unbound). A bound variable no
block names gets a block of its own at the start of the WHERE clause. The text that results
is plain SPARQL 1.1 and means the same on Oxigraph, on any SPARQL endpoint and on rdflib.
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


def bind_values(query: str, terms: Mapping[str, str | None]) -> str:
    """``query`` with variables bound by ``VALUES`` blocks to terms (SPARQL text, see :func:`term_text`).

    Every ``VALUES`` block whose variables are all in ``terms`` (a parameter block) gets one row,
    the terms of its variables (``None``: ``UNDEF``); a variable of ``terms`` that no such block
    names is bound by a block inserted at the start of the WHERE clause (not when its term is
    ``None``). Variables join the query's solutions as ``VALUES`` does (SPARQL 1.1, 18.2.4):
    a block reaches the group it opens, not a subquery inside it.

    Raises:
        RuntimeError: a query that is not SELECT or ASK.
        SyntaxError: a query without a WHERE clause, with unbalanced braces or an unreadable ``VALUES``.
    """
    tokens = [(m.lastgroup or "", m.group()) for m in _TOKENS.finditer(query)]
    form = next((i for i, (kind, text) in enumerate(tokens) if kind == "word" and text.upper() in _FORMS), None)
    if form is None or tokens[form][1].upper() not in ("SELECT", "ASK"):
        raise RuntimeError("only SELECT and ASK queries take bound variables")
    start = _first_brace(tokens, form + 1)
    replaced: dict[int, tuple[int, str]] = {}  # first token -> (last token, text)
    named: set[str] = set()
    for i, (kind, text) in enumerate(tokens):
        if i <= start or kind != "word" or text.upper() != "VALUES":
            continue
        names, end = _values_block(tokens, i)
        if names and all(name in terms for name in names):
            replaced[i] = (end, _values({name: terms[name] for name in names}))
            named.update(names)
    missing = {name: term for name, term in terms.items() if name not in named and term is not None}
    parts = []
    i = 0
    while i < len(tokens):
        if i in replaced:
            end, text = replaced[i]
            parts.append(text)
            i = end + 1
            continue
        parts.append(tokens[i][1])
        if i == start and missing:
            parts.append(" " + _values(missing) + "\n")
        i += 1
    return "".join(parts)


def mentions_keyword(query: str, keyword: str) -> bool:
    """Whether ``keyword`` (e.g. ``SERVICE``) is a keyword of ``query``: not inside a string, IRI or comment."""
    upper = keyword.upper()
    return any(m.lastgroup == "word" and m.group().upper() == upper for m in _TOKENS.finditer(query))


def bind_terms(query: str, substitutions: Mapping[ox.Variable, Term]) -> str:
    """:func:`bind_values` with pyoxigraph variables and terms (what a store's ``substitutions`` pass)."""
    return bind_values(query, {variable.value: term_text(term) for variable, term in substitutions.items()})


def _values(terms: Mapping[str, str | None]) -> str:
    names = " ".join(f"?{name}" for name in terms)
    row = " ".join("UNDEF" if term is None else term for term in terms.values())
    return f"VALUES ({names}) {{ ({row}) }}"


def _values_block(tokens: list[tuple[str, str]], index: int) -> tuple[list[str], int]:
    """The variables of the ``VALUES`` block at ``index`` and the index of its closing brace."""
    i = _significant(tokens, index + 1)
    names: list[str] = []
    if i < len(tokens) and tokens[i][0] == "var":
        names.append(tokens[i][1][1:])
    elif i < len(tokens) and tokens[i][1] == "(":
        i = _significant(tokens, i + 1)
        while i < len(tokens) and tokens[i][0] == "var":
            names.append(tokens[i][1][1:])
            i = _significant(tokens, i + 1)
        if i >= len(tokens) or tokens[i][1] != ")":
            raise SyntaxError("VALUES: ')' expected after its variables")
    else:
        raise SyntaxError("VALUES: a variable or '(' expected")
    brace = _significant(tokens, i + 1)
    if brace >= len(tokens) or tokens[brace][1] != "{":
        raise SyntaxError("VALUES: '{' expected before its rows")
    return names, _matching(tokens, brace)


def _significant(tokens: list[tuple[str, str]], index: int) -> int:
    while index < len(tokens) and tokens[index][0] in ("space", "comment"):
        index += 1
    return index


def _first_brace(tokens: list[tuple[str, str]], index: int) -> int:
    depth = 0
    for i in range(index, len(tokens)):
        kind, text = tokens[i]
        if kind != "punct":
            continue
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif text == "{" and depth == 0:
            return i
    raise SyntaxError("the query has no WHERE clause ('{' expected)")


def _matching(tokens: list[tuple[str, str]], index: int) -> int:
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
