"""Filters for runs (``val_acc > 0.95 and lr < 0.05 and status = success``), compiled to one SPARQL SELECT.

:func:`compile_filter` turns a filter (read by :mod:`cnnprov.analysis.filter_syntax`; the language is
described in docs/filters.md) into a SELECT of the ids of the runs it keeps. Every value the user
wrote, and every field name, is an RDF term bound in a ``VALUES`` block (:func:`cnnprov.rdf.sparql.bind_values`),
never text pasted into the query; the query is plain SPARQL 1.1 that reads the same on Oxigraph,
rdflib and a SPARQL endpoint: each field is read once a run, by an OPTIONAL part, and the
comparisons are one FILTER over them. :meth:`cnnprov.ProvStore.runs` (``where=``) runs it.

What a field reads of a run:

- run fields: ``id``, ``name``, ``status`` (as ``runs`` shows it: a run recorded as running whose
  process is gone reads as crashed), ``started``, ``ended`` (dates, UTC when no zone is given),
  ``epochs`` (started epochs, 0 when none), ``duration`` (seconds from start to end);
- ``hp.NAME`` / ``hp(NAME)``: the run's setting NAME (its own hyperparameters, ``optimizer.lr``,
  ``trainer.max_epochs`` …, the value it started with);
- ``best(M)``, ``last(M)``, ``min(M)``, ``max(M)``, ``metric.M`` (best): from the run's summary of
  metric M. Best is the lowest for a metric that :func:`lower_is_better` says so, else the highest;
- a bare name: a run field if it is one; else the run's hyperparameter of that name; a run that
  has none reads the best of its metric of that name.

Each comparison is true or false for every run: one whose field is missing, or of another type
than the value (a string against a number), makes it false, so ``not (x = 1)`` keeps runs without
``x`` while ``x != 1`` does not. A run with several values of a field (settings recorded by
several attempts) is kept when one of them (one combination, for several such fields) passes.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from cnnprov.analysis.filter_syntax import Comparison, Field, Junction, Node, Not, Value, parse_filter
from cnnprov.errors import QueryError, RunFilterError, RunFilterWarning
from cnnprov.rdf.sparql import Term, bind_values, term_text
from cnnprov.rdf.vocab import CNNPROV_NS, duration_literal, literal, python_value
from cnnprov.storage.protocols import ReadStore

#: Fields every run has (or lacks), as ``cnnprov runs`` shows them.
RUN_FIELDS = ("id", "name", "status", "started", "ended", "epochs", "duration")
#: The statuses ``cnnprov runs`` shows.
STATUSES = ("running", "success", "failed", "crashed")

_PREFIXES = f"""PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX mls: <http://www.w3.org/ns/mls#>
PREFIX cnnprov: <{CNNPROV_NS}>
"""
#: What each run field reads: the pattern that binds it (OPTIONAL) and the expression of its value
#: ({i}: the field's number; ?run, ?run_id and ?run_started are the run's).
_RUN_FIELDS = {
    "name": ("?run rdfs:label ?f{i} .", "?f{i}"),
    "status": ("?run cnnprov:status ?f{i} .", "?f{i}"),
    "started": ("", "?run_started"),
    "ended": ("?run prov:endedAtTime ?f{i} .", "?f{i}"),
    "epochs": ("?run cnnprov:epochCount ?f{i} .", "COALESCE(?f{i}, 0)"),  # no count: no epoch started
    "duration": ("?run prov:endedAtTime ?f{i} .", "?f{i}"),
}
# Each run's records are in its own graph, where the shared nodes are described once: a part starts
# from the named node there (its name in a parameter block), as best-runs does (EXISTS per run was
# 20x slower on 1,000 runs).
_SETTING = (
    "OPTIONAL {{ GRAPH ?g{i} {{ VALUES ({name}) {{ (UNDEF) }} ?p{i} rdfs:label {name} . "
    "?s{i} mls:specifiedBy ?p{i} ; mls:hasValue ?{var}{i} . ?run prov:used ?s{i} . "
    "FILTER NOT EXISTS {{ ?s{i} prov:wasDerivedFrom ?e{i} }} }} }}"
)
_SUMMARY = (
    "OPTIONAL {{ GRAPH ?g{i} {{ VALUES ({name}) {{ (UNDEF) }} ?m{i} rdfs:label {name} . "
    "?s{i} cnnprov:ofMeasure ?m{i} ; cnnprov:summaryOf ?run ; cnnprov:{prop} ?{var}{i} }} }}"
)
_SUMMARY_PROPS = {"last": "lastValue", "min": "minValue", "max": "maxValue"}
_FIELDS_QUERY = _PREFIXES + """SELECT DISTINCT ?kind ?name WHERE {
  { GRAPH ?g { ?measure a mls:EvaluationMeasure ; rdfs:label ?name } BIND("metric" AS ?kind) }
  UNION
  { GRAPH ?g { ?parameter a mls:HyperParameter ; rdfs:label ?name } BIND("hp" AS ?kind) }
}"""
_LOWER_WORDS = {"err", "mse", "mae", "rmse", "nll", "ppl", "perplexity", "wer", "cer"}
_DURATION = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+))(s|m|min|h|d)")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def lower_is_better(metric: str) -> bool:
    """Whether a metric's best value is its lowest: its name holds "loss" or "error", or one of its
    words (split at anything but letters and digits) is err, mse, mae, rmse, nll, ppl, perplexity,
    wer or cer. Else its best is its highest (accuracy, F1, AUC …)."""
    lower = metric.lower()
    return "loss" in lower or "error" in lower or bool(_LOWER_WORDS & set(re.split(r"[^a-z0-9]+", lower)))


@dataclass(frozen=True)
class FilterFields:
    """The names a filter can use in a store: run fields, and what some run records."""

    hyperparameters: tuple[str, ...]
    metrics: tuple[str, ...]
    run: tuple[str, ...] = RUN_FIELDS


def filter_fields(store: ReadStore) -> FilterFields:
    """The hyperparameters and metrics that at least one run in ``store`` has (sorted), with the run fields."""
    found: dict[str, set[str]] = {"hp": set(), "metric": set()}
    for row in _solutions(store, _FIELDS_QUERY):
        found[python_value(row["kind"])].add(python_value(row["name"]))
    return FilterFields(tuple(sorted(found["hp"])), tuple(sorted(found["metric"])))


@dataclass
class CompiledFilter:
    """A filter as SPARQL: ``text`` selects ``?run_id`` once ``terms`` (what the user wrote, as RDF
    terms) are bound; ``sparql`` is that bound text, to send to any SPARQL 1.1 engine."""

    source: str
    text: str
    terms: dict[str, Term]
    hints: list[str] = field(default_factory=list)

    @property
    def sparql(self) -> str:
        return bind_values(self.text, {name: term_text(term) for name, term in self.terms.items()})


def compile_filter(where: str, fields: FilterFields | None = None, crashed: Iterable[str] = ()) -> CompiledFilter:
    """The SPARQL SELECT of the ids of the runs ``where`` keeps.

    Args:
        where: the filter.
        fields: what the store holds (:func:`filter_fields`), to add hints about names no run has.
        crashed: ids of runs that read as crashed though recorded as running (what ``runs`` shows).

    Raises:
        RunFilterError: a filter that cannot be read, or a value of the wrong kind for its field.
    """
    return _Compiler(where, fields, list(crashed)).compile()


def matching_run_ids(
    store: ReadStore, where: str, crashed: Iterable[str] = (), hints: list[str] | None = None
) -> set[str]:
    """The ids of the runs in ``store`` that ``where`` keeps; each hint (a field no run has …) is
    a :class:`~cnnprov.errors.RunFilterWarning`, or goes into ``hints`` when it is given (a server
    answering requests on threads: warnings' filters are the whole process's)."""
    parse_filter(where)  # a filter that cannot be read is refused before the store is asked
    compiled = compile_filter(where, filter_fields(store), crashed)
    if hints is not None:
        hints += compiled.hints
    for hint in compiled.hints if hints is None else ():
        warnings.warn(hint, RunFilterWarning, stacklevel=3)
    return {python_value(row["run_id"]) for row in _solutions(store, compiled.sparql)}


def _solutions(store: ReadStore, text: str) -> list:
    try:
        return list(store.query(text, use_default_graph_as_union=True))
    except (SyntaxError, RuntimeError, OSError, ValueError) as error:  # QueryError: an endpoint refused it
        raise QueryError(f"the run filter cannot run: {error}") from None


class _Compiler:
    def __init__(self, source: str, fields: FilterFields | None, crashed: list[str]) -> None:
        self.source, self.fields, self.crashed = source, fields, crashed
        self.terms: dict[str, Term] = {}
        self.hints: list[str] = []
        self.patterns: list[str] = []  # what binds each field
        self.expressions: dict[tuple[str, str, str | None], str] = {}  # field -> the expression of its value

    def compile(self) -> CompiledFilter:
        condition = self.node(parse_filter(self.source))
        text = (
            _PREFIXES
            + "SELECT DISTINCT ?run_id WHERE {\n"
            + "  ?run a cnnprov:TrainingRun ; cnnprov:runId ?run_id ; prov:startedAtTime ?run_started .\n"
            + "".join(f"  {pattern}\n" for pattern in self.patterns)
            + f"  FILTER({condition})\n}}"
        )
        return CompiledFilter(self.source, text, self.terms, list(dict.fromkeys(self.hints)))

    def bind(self, term: Term, prefix: str = "v") -> str:
        """A variable that the term will be bound to."""
        name = f"{prefix}{len(self.terms)}"
        self.terms[name] = term
        return f"?{name}"

    def error(self, reason: str, offset: int) -> RunFilterError:
        return RunFilterError(reason, self.source, offset)

    # -- the tree -----------------------------------------------------------------
    def node(self, node: Node) -> str:
        if isinstance(node, Junction):
            joiner = " && " if node.op == "and" else " || "
            return "(" + joiner.join(self.node(operand) for operand in node.operands) + ")"
        if isinstance(node, Not):
            return f"!({self.node(node.operand)})"
        return f"COALESCE({self.comparison(node)}, false)"  # a missing field: false, never an error

    def comparison(self, node: Comparison) -> str:
        target = node.field
        if target.kind == "run" or (target.kind == "name" and target.name in RUN_FIELDS):
            return self.run_field(node)
        if target.kind == "hp":
            self.hint_missing(target, self.fields.hyperparameters if self.fields else None, "hyperparameter")
        elif target.kind == "metric":
            self.hint_missing(target, self.fields.metrics if self.fields else None, "metric")
        else:
            self.hint_bare(target)
        return self.condition(node, self.expression(target))

    def expression(self, target: Field) -> str:
        """The expression of a hyperparameter's or metric's value, with the patterns that bind it (once a field)."""
        key = (target.kind, target.name, target.summary)
        if key not in self.expressions:
            i, name = len(self.expressions), self.bind(literal(target.name), "n")
            if target.kind == "hp":
                self.patterns.append(_SETTING.format(i=i, name=name, var="f"))
                self.expressions[key] = f"?f{i}"
            elif target.kind == "metric":
                self.patterns.append(_SUMMARY.format(i=i, name=name, var="f", prop=self.prop(target)))
                self.expressions[key] = f"?f{i}"
            else:  # the run's hyperparameter; a run without it, its metric's best
                self.patterns.append(_SETTING.format(i=f"{i}h", name=name, var="f"))
                best = Field("metric", target.name, "best", target.offset, target.text)
                self.patterns.append(_SUMMARY.format(i=f"{i}m", name=name, var="f", prop=self.prop(best)))
                self.expressions[key] = f"COALESCE(?f{i}h, ?f{i}m)"
        return self.expressions[key]

    def run_field(self, node: Comparison) -> str:
        name = node.field.name
        if name not in RUN_FIELDS:
            raise self.error(f"unknown run field '{name}': expected one of {', '.join(RUN_FIELDS)}", node.field.offset)
        if name == "id":
            return self.condition(node, "?run_id")
        if name == "duration" and node.op in ("~", "contains"):
            raise self.error(f"'{node.op}' compares text: duration is a number of seconds", node.offset)
        key = ("run", name, None)
        if key not in self.expressions:
            i = len(self.expressions)
            pattern, expression = (part.format(i=i) for part in _RUN_FIELDS[name])
            if pattern:
                self.patterns.append(f"OPTIONAL {{ {pattern} }}")
            self.expressions[key] = expression
        expression = self.expressions[key]
        if name == "status":
            self.hint_status(node)
            if self.crashed:  # what runs shows: recorded as running, its process gone
                ids = ", ".join(self.bind(literal(run_id), "c") for run_id in self.crashed)
                expression = f'IF(?run_id IN ({ids}), "crashed", {expression})'
        if name == "duration":
            return self.condition(node, expression, plus="?run_started")
        return self.condition(node, expression)

    def prop(self, target: Field) -> str:
        summary = target.summary or "best"
        if summary == "best":
            summary = "min" if lower_is_better(target.name) else "max"
        return _SUMMARY_PROPS[summary]

    # -- conditions ----------------------------------------------------------------
    def condition(self, node: Comparison, x: str, plus: str | None = None) -> str:
        """The SPARQL condition on ``x``; ``plus``: the values are durations added to it (``?start + v``)."""
        if node.op in ("~", "contains"):
            (value,) = node.values
            text = value.value if value.quoted else value.text
            if node.op == "~":
                try:
                    re.compile(str(text))
                except re.error as error:
                    raise self.error(f"not a regular expression ({error})", value.offset) from None
                return f'REGEX(STR({x}), STR({self.bind(literal(str(text)))}), "i")'
            return f"CONTAINS(LCASE(STR({x})), LCASE(STR({self.bind(literal(str(text)))})))"
        values = [self.value(node.field, value) for value in node.values]
        if plus is not None:
            values = [f"({plus} + {value})" for value in values]
        if node.op == "in":
            return "(" + " || ".join(f"COALESCE({x} = {value}, false)" for value in values) + ")"
        if node.op == "between":
            return f"({x} >= {values[0]} && {x} <= {values[1]})"
        return f"{x} {node.op} {values[0]}"

    def value(self, target: Field, value: Value) -> str:
        """The variable bound to a value, as the field compares it: a date, a duration, or as written."""
        name = target.name if target.kind in ("run", "name") else None
        if name in ("started", "ended"):
            return self.bind(literal(self.date(value)))
        if name == "duration":
            return self.bind(duration_literal(self.seconds(value)))
        return self.bind(literal(value.value))

    def date(self, value: Value) -> dt.datetime:
        try:
            moment = dt.datetime.fromisoformat(str(value.value))
        except ValueError:
            raise self.error(
                "expected a date or time such as 2026-01-31 or 2026-01-31T09:30 (UTC unless a zone is given)",
                value.offset,
            ) from None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)

    def seconds(self, value: Value) -> float:
        if isinstance(value.value, (int, float)) and not isinstance(value.value, bool):
            return float(value.value)
        match = _DURATION.fullmatch(str(value.value))
        if match is None:
            raise self.error("expected a duration: seconds, or a number with s, m, h or d (90s, 5m, 2h)", value.offset)
        return float(match[1]) * _UNITS[match[2]]

    # -- hints -----------------------------------------------------------------
    def hint_missing(self, target: Field, names: tuple[str, ...] | None, kind: str) -> None:
        if names is not None and target.name not in names:
            self.hints.append(f"no run has a {kind} '{target.name}'{self.suggest(target.name, names)}")

    def hint_bare(self, target: Field) -> None:
        if self.fields is None:
            return
        is_hp, is_metric = target.name in self.fields.hyperparameters, target.name in self.fields.metrics
        if is_hp and is_metric:
            self.hints.append(
                f"'{target.name}' is a hyperparameter and a metric: a run's hyperparameter is compared "
                f"(write metric.{target.name} or best({target.name}) for the metric)"
            )
        elif not is_hp and not is_metric:
            known = (*self.fields.run, *self.fields.hyperparameters, *self.fields.metrics)
            suggestion = self.suggest(target.name, known)
            self.hints.append(f"no run has a hyperparameter or metric '{target.name}'{suggestion}")

    def hint_status(self, node: Comparison) -> None:
        if node.op not in ("=", "!=", "in"):
            return
        for value in node.values:
            if value.value not in STATUSES:
                self.hints.append(f"no run shows the status '{value.value}': runs show {', '.join(STATUSES)}")

    @staticmethod
    def suggest(name: str, known: tuple[str, ...]) -> str:
        close = difflib.get_close_matches(name, known, n=3)
        if close:
            return f" (did you mean {' or '.join(close)}?)"
        return f"; fields: {', '.join(known[:12])}{' …' if len(known) > 12 else ''}"
