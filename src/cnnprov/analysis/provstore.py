"""Read a provenance store from Python: bundled queries, SPARQL, exports, rdflib.

Example::

    from cnnprov import ProvStore

    store = ProvStore("provenance")
    for row in store.query("best-runs", metric="val_acc"):
        print(row["run_name"], row["best"])
    frame = store.query("best-runs").to_dataframe()   # needs pandas
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyoxigraph as ox

from cnnprov.analysis.json_ld import compact_json_ld
from cnnprov.analysis.prov_export import PROV_FORMATS
from cnnprov.analysis.query_library import QueryFile, QueryNotFoundError, load_query, parse_query
from cnnprov.analysis.run_filter import FilterFields, filter_fields, matching_run_ids
from cnnprov.errors import QueryError, RunNotFoundError
from cnnprov.rdf.sparql import Term, bind_values, term_text
from cnnprov.rdf.vocab import CNNPROV_NS, PREFIXES, literal, python_value
from cnnprov.storage.advertisement import is_process_alive
from cnnprov.storage.location import StoreLocation
from cnnprov.storage.protocols import Reader, ReadStore

#: Export formats that pyoxigraph writes directly.
RDF_FORMATS = {
    "turtle": ox.RdfFormat.TURTLE,
    "trig": ox.RdfFormat.TRIG,
    "nquads": ox.RdfFormat.N_QUADS,
    "jsonld": ox.RdfFormat.JSON_LD,
}
_RUN_PARAMETERS = ("run", "run_a", "run_b")
#: The process of each run still recorded as running.
_RUNNING_PROCESSES = (
    f'SELECT ?id ?host ?pid WHERE {{ ?run <{CNNPROV_NS}status> "running" ; <{CNNPROV_NS}runId> ?id ; '
    f"<{CNNPROV_NS}hostname> ?host ; <{CNNPROV_NS}processId> ?pid }}"
)
#: Queries about runs without an end, whose rows get a ``state`` column computed here:
#: whether a process is alive is not something SPARQL can ask.
_RUN_STATE_QUERIES = {"unfinished-runs"}


@dataclass
class QueryResult:
    """Rows of a SELECT query with typed Python values (``int``, ``float``, ``bool``, ``datetime``, ``str``)."""

    columns: list[str]
    rows: list[tuple]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.to_dicts())

    def __len__(self) -> int:
        return len(self.rows)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=False)) for row in self.rows]

    def column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def to_dataframe(self) -> Any:
        """The rows as a pandas DataFrame (``pip install 'cnnprov[analysis]'``)."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError("to_dataframe needs pandas: pip install 'cnnprov[analysis]'") from error
        return pd.DataFrame.from_records(self.rows, columns=self.columns)


class ProvStore:
    """A provenance store opened for reading.

    Each call opens the store, answers, and lets it go, so a training process
    can start writing to the same store between calls. A store a training
    process holds is read through that process, which the caller never sees.

    Args:
        path: the store directory (default ``$CNNPROV_STORE`` or ``./provenance``), the
            URL of a SPARQL 1.1 endpoint runs were logged to (see :mod:`cnnprov.storage.remote`),
            or a :class:`~cnnprov.storage.location.StoreLocation`.
        options: options of the location (``headers``, ``timeout_s``, ``union`` …).
    """

    def __init__(self, path: str | os.PathLike[str] | StoreLocation | None = None, **options: Any) -> None:
        self.location = StoreLocation.parse(path, **options)
        #: the directory, or the endpoint URL
        self.path: Path | str = self.location.path if self.location.path is not None else str(self.location)
        self._held: Reader | None = None

    def __repr__(self) -> str:
        return f"ProvStore({str(self.location)!r})"

    def __enter__(self) -> ProvStore:
        """Hold the store open across many calls (faster; keeps writers out until exit)."""
        if self._held is None:
            self._held = self.location.open_reader()
        return self

    def __exit__(self, *exc_info: object) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    @contextmanager
    def reading(self) -> Iterator[Reader]:
        """The store to read, for one call (or the one held by ``with``)."""
        if self._held is not None:
            yield self._held
            return
        reader = self.location.open_reader()
        try:
            yield reader
        finally:
            reader.close()

    # -- queries -------------------------------------------------------------
    def query(self, name_or_path: str | Path, **params: Any) -> QueryResult:
        """Run a bundled query (``"best-runs"``) or a ``.rq`` file, binding ``params`` as RDF terms."""
        try:
            query = load_query(name_or_path)
        except QueryNotFoundError as error:
            raise QueryError(str(error)) from None
        with self.reading() as store:
            result = _select(store, query, self._bound_text(store, query, params))
            serving = store.serving_run_id()
        if query.name in _RUN_STATE_QUERIES and {"run_id", "host", "process_id"} <= set(result.columns):
            result = self._with_run_state(result, serving)
        return result

    def _with_run_state(self, result: QueryResult, serving: str | None) -> QueryResult:
        """Add ``state`` to rows about unfinished runs: running, crashed, or unknown (another host).

        A run still training is the one whose process serves the store, or whose process is alive;
        a run without an end whose process is gone was killed.
        """
        states = []
        for row in result.to_dicts():
            alive = is_process_alive(row["host"], row["process_id"])
            if row["run_id"] == serving or alive:
                states.append("running")
            else:
                states.append("crashed" if alive is False else "unknown")
        rows = [(*row, state) for row, state in zip(result.rows, states, strict=False)]
        return QueryResult([*result.columns, "state"], rows)

    def query_text(self, name_or_path: str | Path, **params: Any) -> str:
        """The SPARQL text :meth:`query` sends for these parameters: standard SPARQL 1.1, its
        parameter blocks (``VALUES``) holding the bound terms, to run on any SPARQL engine over
        the union of the run graphs."""
        try:
            query = load_query(name_or_path)
        except QueryNotFoundError as error:
            raise QueryError(str(error)) from None
        with self.reading() as store:
            return self._bound_text(store, query, params)

    def sparql(self, text: str, **params: Any) -> QueryResult:
        """Run SPARQL text over the union of all run graphs; ``params`` bind ``?name`` variables
        (with ``VALUES``, see :func:`cnnprov.rdf.sparql.bind_values`)."""
        query = parse_query("sparql", text)
        with self.reading() as store:
            terms = {name: _term(value) for name, value in params.items()}
            return _select(store, query, _bind(query, terms))

    def _bound_text(self, store: ReadStore, query: QueryFile, params: dict[str, Any]) -> str:
        return _bind(query, self._bindings(store, query, params))

    def _bindings(self, store: ReadStore, query: QueryFile, params: dict[str, Any]) -> dict[str, Term | None]:
        unknown = set(params) - set(query.parameters)
        if unknown:
            known = ", ".join(query.parameters) or "none"
            raise QueryError(
                f"query '{query.name}' has no parameter {', '.join(sorted(unknown))}; its parameters: {known}"
            )
        bindings: dict[str, Term | None] = {}
        for name, parameter in query.parameters.items():
            value = params.get(name, parameter.default)
            if value is None:
                if parameter.required:
                    raise QueryError(
                        f"query '{query.name}' needs the parameter '{name}' ({parameter.description}): "
                        f"pass --param {name}=VALUE"
                    )
                bindings[name] = None  # UNDEF: the parameter constrains nothing
                continue
            if name in _RUN_PARAMETERS:
                value = self._resolve_run(store, str(value))
            bindings[name] = _term(_coerce(query.name, name, value, parameter.default))
        return bindings

    # -- runs --------------------------------------------------------------------
    def runs(self, where: str | None = None, hints: list[str] | None = None) -> QueryResult:
        """One row per run: id, name, status, start, end, epochs; with ``where``, the runs a filter
        keeps, e.g. ``"val_acc > 0.95 and lr < 0.05 and status = success"`` (docs/filters.md).

        A run recorded as "running" whose process on this host is gone reads as "crashed"
        (the next process that writes the store records it so); ``status`` in a filter reads it so too.
        A filter's hints are :class:`~cnnprov.errors.RunFilterWarning` warnings, or go into ``hints``.

        Raises:
            RunFilterError: a filter that cannot be read (the message points at the place).
        """
        result = self._corrected(self.query("runs"))
        if where is None or not where.strip():  # an empty filter keeps every run
            return result
        run_id, status = result.columns.index("run_id"), result.columns.index("status")
        crashed = [row[run_id] for row in result.rows if row[status] == "crashed"]
        with self.reading() as store:
            kept = matching_run_ids(store, where, crashed, hints)
        return QueryResult(result.columns, [row for row in result.rows if row[run_id] in kept])

    def filter_fields(self) -> FilterFields:
        """The names a ``runs(where=…)`` filter can use: run fields, and each hyperparameter and metric some run has."""
        with self.reading() as store:
            return filter_fields(store)

    def _corrected(self, result: QueryResult) -> QueryResult:
        status = result.columns.index("status")
        if not any(row[status] == "running" for row in result.rows):
            return result
        with self.reading() as store:
            serving = store.serving_run_id()
            processes = {
                python_value(row["id"]): (python_value(row["host"]), python_value(row["pid"]))
                for row in store.query(_RUNNING_PROCESSES, use_default_graph_as_union=True)
            }
        run_id = result.columns.index("run_id")
        rows = []
        for row in result.rows:
            host, pid = processes.get(row[run_id], (None, None))
            if row[status] == "running" and row[run_id] != serving and is_process_alive(host, pid) is False:
                row = (*row[:status], "crashed", *row[status + 1 :])
            rows.append(row)
        return QueryResult(result.columns, rows)

    def hyperparameters(self, wide: bool = True, include: str = "run") -> Any:
        """Runs × hyperparameter values as a pandas DataFrame.

        Wide (the default): one row per run, one column per hyperparameter, so
        runs compare at a glance; long: the ``hyperparameters`` query's rows.
        ``include="all"`` adds optimizer and scheduler settings.
        """
        result = self.query("hyperparameters", include=include)
        if not wide:
            return result.to_dataframe()
        import pandas as pd

        runs: dict[str, dict[str, Any]] = {}
        for row in result:
            run = runs.setdefault(row["run_id"], {"run_id": row["run_id"], "run_name": row["run_name"]})
            run[row["name"]] = row["value"]
        return pd.DataFrame(list(runs.values()))

    def learning_rates(self, run: str) -> QueryResult:
        """Each parameter group's rate from each step on (:func:`cnnprov.analysis.learning_rates.learning_rates`)."""
        from cnnprov.analysis.learning_rates import learning_rates
        return learning_rates(self, run)

    def metric_values(self, run: str, metric: str | None = None) -> QueryResult:
        """Every value the run logged, series unpacked (:func:`cnnprov.analysis.metric_values.metric_values`)."""
        from cnnprov.analysis.metric_values import metric_values
        return metric_values(self, run, metric)

    def resolve_run(self, run: str) -> str:
        """The full id of the run whose id is or starts with ``run``."""
        with self.reading() as store:
            return self._resolve_run(store, run)

    def _resolve_run(self, store: ReadStore, run: str) -> str:
        ids = [
            python_value(row["id"])
            for row in store.query(
                f"SELECT DISTINCT ?id WHERE {{ ?run <{CNNPROV_NS}runId> ?id }}", use_default_graph_as_union=True
            )
        ]
        matches = [i for i in ids if i == run] or [i for i in ids if i.startswith(run)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFoundError(f"no run with id '{run}' in '{self.path}'; `cnnprov runs` lists the ids")
        raise RunNotFoundError(f"'{run}' matches {len(matches)} runs; give more of the id")

    def _bundle(self, store: ReadStore, run_id: str) -> ox.NamedNode:
        rows = list(
            store.query(
                f"SELECT ?g ?id WHERE {{ VALUES ?id {{ {term_text(ox.Literal(run_id))} }} "
                f"GRAPH ?g {{ ?g <{CNNPROV_NS}describesRun> ?run . ?run <{CNNPROV_NS}runId> ?id }} }}"
            )
        )
        if not rows:
            raise RunNotFoundError(f"run '{run_id}' has no record bundle in '{self.path}'")
        return rows[0]["g"]

    # -- export ------------------------------------------------------------------
    def export(self, format: str = "turtle", run: str | None = None) -> bytes:
        """Serialize one run (``run``) or every run as Turtle, TriG, N-Quads or JSON-LD, or through the
        ``prov`` package as PROV-N, PROV-JSON or PROV-XML (``provn``, ``provjson``, ``provxml``)."""
        if format in PROV_FORMATS:
            from cnnprov.analysis.prov_export import export_prov

            return export_prov(self, format, run=run)
        if format not in RDF_FORMATS:
            known = ", ".join([*RDF_FORMATS, *PROV_FORMATS])
            raise QueryError(f"unknown export format '{format}'; choose one of {known}")
        rdf_format = RDF_FORMATS[format]
        with self.reading() as store:
            if run is not None:
                graph = self._bundle(store, self._resolve_run(store, run))
                quads = list(store.quads_for_pattern(None, None, None, graph))
            else:
                quads = [q for q in store.quads_for_pattern(None, None, None) if q.graph_name != ox.DefaultGraph()]
        if format == "jsonld":
            return compact_json_ld(quads)
        if rdf_format.supports_datasets:
            return ox.serialize(quads, format=rdf_format, prefixes=PREFIXES) or b""
        triples = list(dict.fromkeys(q.triple for q in quads))
        return ox.serialize(triples, format=rdf_format, prefixes=PREFIXES) or b""

    # -- rdflib ----------------------------------------------------------------------
    def dataset(self) -> Any:
        """The store as an rdflib ``Dataset`` (through oxrdflib), for anything custom.

        The dataset holds the store open read-only, as it was when opened (a run
        writing meanwhile is not seen): call ``.close()`` when done, or use it inside
        ``with ProvStore(...) as store:``, where it shares the held store with
        :meth:`query`. Its default graph is the union of the run graphs.
        """
        from rdflib import Dataset

        inner = self._held if self._held is not None else self.location.open_reader()
        dataset = Dataset(store=inner.rdflib_store(), default_union=True)
        for prefix, namespace in PREFIXES.items():
            dataset.bind(prefix, namespace)
        return dataset


def _bind(query: QueryFile, terms: dict[str, Term | None]) -> str:
    """The query's text with its parameter blocks holding ``terms`` (standard SPARQL 1.1)."""
    if not terms:
        return query.text
    try:
        texts = {name: None if term is None else term_text(term) for name, term in terms.items()}
        return bind_values(query.text, texts)
    except SyntaxError as error:
        raise QueryError(f"query '{query.name}' is not valid SPARQL: {error}") from None
    except (RuntimeError, TypeError) as error:
        raise QueryError(f"query '{query.name}' cannot take parameters: {error}") from None


def _select(store: ReadStore, query: QueryFile, text: str) -> QueryResult:
    try:
        solutions = store.query(text, use_default_graph_as_union=True)
    except QueryError as error:  # an endpoint refused it
        raise QueryError(f"query '{query.name}' cannot run: {error}") from None
    except SyntaxError as error:
        raise QueryError(f"query '{query.name}' is not valid SPARQL: {error}") from None
    except RuntimeError as error:
        raise QueryError(f"query '{query.name}' cannot run: {error}") from None
    if not isinstance(solutions, ox.QuerySolutions):
        raise QueryError(f"query '{query.name}' is not a SELECT query; cnnprov runs SELECT queries")
    # A query may project its parameters; those columns repeat what the caller passed and are left out.
    kept = [(i, v.value) for i, v in enumerate(solutions.variables) if v.value not in query.parameters]
    indices = [i for i, _ in kept]
    # by position: looking a value up by its variable's name costs more than converting it
    try:  # solutions are computed as they are read: a query can still fail here
        rows = [tuple(python_value(solution[i]) for i in indices) for solution in solutions]
    except (OSError, RuntimeError, ValueError) as error:  # e.g. a SERVICE that cannot be reached
        raise QueryError(f"query '{query.name}' failed while it ran: {error}") from None
    return QueryResult([name for _, name in kept], rows)


def _coerce(query: str, name: str, value: Any, default: Any) -> Any:
    """Values from the command line are strings: give them the type of the parameter's default."""
    if not isinstance(value, str) or isinstance(default, (str, type(None), bool)):
        return value
    try:
        return type(default)(value)
    except ValueError:
        raise QueryError(
            f"parameter '{name}' of query '{query}' takes a {type(default).__name__}, got '{value}'"
        ) from None


def _term(value: Any) -> Any:
    if isinstance(value, (ox.NamedNode, ox.Literal, ox.BlankNode)):
        return value
    return literal(value)
