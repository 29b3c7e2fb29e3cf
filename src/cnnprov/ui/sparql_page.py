"""The SPARQL page: a bundled question with its parameters as a form, or SPARQL typed in."""

from __future__ import annotations

import re
from typing import Any

from cnnprov.analysis.provstore import ProvStore, QueryResult
from cnnprov.analysis.query_library import QueryFile, bundled_queries, load_query
from cnnprov.errors import CnnprovError

#: a federated part: the dashboard would ask another host and show its answer
_SERVICE = re.compile(r"\bSERVICE\b", re.IGNORECASE)


def questions() -> list[QueryFile]:
    """Every bundled question, by name."""
    return [load_query(name) for name in bundled_queries()]


def answer(store: ProvStore, form: Any) -> dict[str, Any]:
    """What the page shows for the submitted ``form``: the question and its parameters, or the text
    typed in; the result, or the error (with its line, as the engine reports it)."""
    name, text = form.get("query", ""), form.get("text", "")
    if name and name not in bundled_queries():  # a name, never a path: the page reads no file it is given
        refusal = f"no bundled question named '{name}'; choose one from the list"
        return {"questions": questions(), "chosen": None, "params": {}, "text": text, "result": None, "error": refusal}
    chosen = load_query(name) if name else None
    params = {}
    if chosen is not None:
        params = {key: form.get(f"param.{key}") for key in chosen.parameters if form.get(f"param.{key}")}
    result: QueryResult | None = None
    error: str | None = None
    if chosen is None and _SERVICE.search(text):
        error = "the dashboard does not send queries on to other endpoints (SERVICE): ask them yourself"
        return {"questions": questions(), "chosen": None, "params": {}, "text": text, "result": None, "error": error}
    try:
        if chosen is not None:
            result = store.query(name, **params)
        elif text.strip():
            result = store.sparql(text)
    except CnnprovError as failure:
        error = str(failure)
    return {
        "questions": questions(),
        "chosen": chosen,
        "params": params,
        "text": text,
        "result": result,
        "error": error,
    }
