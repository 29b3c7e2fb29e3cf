"""JSON-LD with a context: what ``ProvStore.export("jsonld")`` writes."""

from __future__ import annotations

import json
from typing import Any

import pyoxigraph as ox

from cnnprov.rdf.vocab import PREFIXES


def compact_json_ld(quads: list[ox.Quad]) -> bytes:
    """JSON-LD with cnnprov's prefixes as its ``@context`` (compact keys, ``@type``), a named graph per run.

    pyoxigraph's JSON-LD writer writes expanded JSON-LD only; rdflib compacts with a context.
    """
    import rdflib

    dataset = rdflib.Dataset()
    nquads = ox.serialize(sorted(quads, key=str), format=ox.RdfFormat.N_QUADS) or b""
    dataset.parse(data=nquads, format="nquads")
    text = dataset.serialize(format="json-ld", context=dict(PREFIXES), auto_compact=True)
    # rdflib writes nodes in the order of sets; arrays of RDF terms are unordered, so sorting them
    # makes the same store give the same bytes whatever the hash seed (cnnprov writes no @list)
    return json.dumps(_sorted_json(json.loads(text)), indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _sorted_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_json(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_sorted_json(item) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return value
