"""Pictures: one run's provenance graph as Graphviz DOT (the ontology's: :mod:`cnnprov.analysis.ontology_picture`).

A run's record holds thousands of nodes (one per metric value), so the picture
folds them: the epochs become one activity ("epochs 0–4"), the values of each
measure one entity with their count, range and last value, the checkpoints one
entity. Folded nodes have a double border. Shapes and colours follow the PROV
conventions: entities are yellow ovals, activities blue boxes, agents orange
houses; edges carry the PROV-O relation they stand for.

DOT is text and needs nothing else; SVG and PNG are drawn by Graphviz's ``dot``
program (``apt-get install graphviz``).

Example::

    from cnnprov import ProvStore
    from cnnprov.analysis.picture import run_dot, render

    dot = run_dot(ProvStore("provenance"), run="3f2a")
    open("run.svg", "wb").write(render(dot, "svg"))
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnprov.errors import PictureError
from cnnprov.rdf.vocab import CNNPROV_NS, MLS_NS, PROV_NS

if TYPE_CHECKING:
    from cnnprov.analysis.provstore import ProvStore

#: Picture formats: DOT text, or drawn by Graphviz.
PICTURE_FORMATS = ("svg", "png", "dot")

_ENTITY = 'shape=oval, style=filled, fillcolor="#FFFC87", color="#808080"'
_ACTIVITY = 'shape=box, style=filled, fillcolor="#9FB1FC", color="#0000FF"'
_AGENT = 'shape=house, style=filled, fillcolor="#FED37F", color="#808080"'
_MAX_SETTINGS = 12  # hyperparameters listed on the picture; the rest are counted


# -- drawing ---------------------------------------------------------------------------
def render(dot: str, format: str) -> bytes:
    """Draw DOT text as ``svg`` or ``png`` with Graphviz's ``dot``; ``dot`` returns the text itself."""
    if format == "dot":
        return dot.encode("utf-8")
    if format not in PICTURE_FORMATS:
        raise PictureError(f"unknown picture format '{format}'; choose one of {', '.join(PICTURE_FORMATS)}")
    program = shutil.which("dot")
    if program is None:
        raise PictureError(
            f"drawing a {format.upper()} picture needs Graphviz's `dot` program, which is not on the PATH: "
            "install Graphviz (Debian/Ubuntu: `sudo apt-get install graphviz`; macOS: `brew install graphviz`), "
            "or write DOT with `--format dot` and draw it elsewhere"
        )
    try:
        done = subprocess.run([program, f"-T{format}"], input=dot.encode("utf-8"), capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PictureError(f"Graphviz's `dot` could not draw the picture: {error}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()
        raise PictureError(f"Graphviz's `dot` failed (exit status {done.returncode}): {detail}")
    return done.stdout


def run_picture(store: ProvStore, run: str, format: str = "svg") -> bytes:
    """One run's provenance graph as SVG, PNG or DOT (``format``)."""
    return render(run_dot(store, run), format)


@dataclass
class Dot:
    """A DOT digraph under construction: nodes get short ids, labels are escaped once here."""

    title: str
    rankdir: str = "RL"
    name: str = "provenance"
    lines: list[str] = field(default_factory=list)
    count: int = 0

    def node(self, label: str, style: str, folded: bool = False) -> str:
        self.count += 1
        name = f"n{self.count}"
        extra = ", peripheries=2" if folded else ""
        self.lines.append(f'  {name} [label="{_escape(label)}", {style}{extra}];')
        return name

    def edge(self, source: str, target: str, label: str = "", style: str = "") -> None:
        attributes = [f'label="{_escape(label)}"'] if label else []
        if style:
            attributes.append(style)
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        self.lines.append(f"  {source} -> {target}{suffix};")

    def text(self) -> str:
        header = [
            f"digraph {self.name} {{",
            f'  graph [rankdir={self.rankdir}, label="{_escape(self.title)}", labelloc=t,'
            ' fontname="Helvetica", fontsize=14];',
            '  node [fontname="Helvetica", fontsize=10];',
            '  edge [fontname="Helvetica", fontsize=8, color="#606060"];',
        ]
        return "\n".join(header + self.lines + ["}"]) + "\n"


def _escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# -- one run -------------------------------------------------------------------------------
_PREFIXES = f"""PREFIX prov: <{PROV_NS}>
PREFIX mls: <{MLS_NS}>
PREFIX cnnprov: <{CNNPROV_NS}>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
"""

_RUN = """SELECT ?id ?name ?status ?start ?end ?seconds ?plan (COUNT(DISTINCT ?attempt) AS ?attempts) WHERE {
  ?run cnnprov:runId ?id .
  OPTIONAL { ?run rdfs:label ?name } OPTIONAL { ?run cnnprov:status ?status }
  OPTIONAL { ?run prov:startedAtTime ?start } OPTIONAL { ?run prov:endedAtTime ?end }
  OPTIONAL { ?run cnnprov:durationSeconds ?seconds }
  OPTIONAL { ?run prov:qualifiedAssociation/prov:hadPlan/cnnprov:pythonClass ?plan }
  OPTIONAL { ?attempt a cnnprov:Attempt ; cnnprov:partOfRun ?run }
} GROUP BY ?id ?name ?status ?start ?end ?seconds ?plan"""

_AGENTS = """SELECT DISTINCT ?id ?agent ?label ?version ?person WHERE {
  ?run cnnprov:runId ?id ; prov:wasAssociatedWith ?agent .
  OPTIONAL { ?agent rdfs:label ?label } OPTIONAL { ?agent cnnprov:softwareVersion ?version }
  BIND (EXISTS { ?agent a prov:Person } AS ?person)
} ORDER BY DESC(?person) ?label"""

_SETTINGS = """SELECT DISTINCT ?id ?name ?value WHERE {
  ?run cnnprov:runId ?id ; prov:used ?setting .
  ?setting a mls:HyperParameterSetting ; mls:specifiedBy/rdfs:label ?name ; mls:hasValue ?value .
  FILTER NOT EXISTS { ?setting cnnprov:settingOf ?owner }
} ORDER BY ?name"""

_ARCHITECTURE = """SELECT ?id ?class ?params (COUNT(DISTINCT ?layer) AS ?layers) WHERE {
  ?run cnnprov:runId ?id ; prov:used ?arch .
  ?arch a cnnprov:Architecture .
  OPTIONAL { ?arch cnnprov:pythonClass ?class } OPTIONAL { ?arch cnnprov:parameterCount ?params }
  OPTIONAL { ?arch prov:hadMember ?layer }
} GROUP BY ?id ?class ?params"""

_LAYER_KINDS = """SELECT ?id ?kind (COUNT(DISTINCT ?layer) AS ?n) WHERE {
  ?run cnnprov:runId ?id ; prov:used ?arch .
  ?arch a cnnprov:Architecture ; prov:hadMember ?layer .
  ?layer a ?kind . FILTER (STRSTARTS(STR(?kind), STR(cnnprov:)) && ?kind != cnnprov:Layer)
} GROUP BY ?id ?kind ORDER BY DESC(?n) ?kind"""

_OPTIMIZERS = """SELECT DISTINCT ?id ?optimizer ?class ?key ?value WHERE {
  ?run cnnprov:runId ?id ; prov:used ?optimizer .
  ?optimizer a cnnprov:Optimizer ; cnnprov:pythonClass ?class .
  OPTIONAL {
    ?optimizer prov:hadMember ?group . ?group cnnprov:parameterGroupIndex 0 .
    ?setting cnnprov:settingOf ?group ; mls:specifiedBy/rdfs:label ?key ; mls:hasValue ?value .
    FILTER NOT EXISTS { ?setting prov:wasDerivedFrom ?earlier }
    FILTER (?key IN ("optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "optimizer.betas"))
  }
} ORDER BY ?optimizer ?key"""

_SCHEDULERS = """SELECT DISTINCT ?id ?class ?interval WHERE {
  ?run cnnprov:runId ?id ; prov:used ?scheduler .
  ?scheduler a cnnprov:LearningRateScheduler ; cnnprov:pythonClass ?class .
  OPTIONAL { ?scheduler cnnprov:schedulerInterval ?interval }
}"""

_DATA = """SELECT DISTINCT ?id ?role ?class ?samples WHERE {
  ?run cnnprov:runId ?id ; prov:used ?data .
  ?data a mls:Dataset ; cnnprov:dataRole ?role .
  OPTIONAL { ?data rdfs:label ?class } OPTIONAL { ?data cnnprov:sampleCount ?samples }
} ORDER BY ?role"""

_EPOCHS = """SELECT ?id (COUNT(DISTINCT ?epoch) AS ?n) (MIN(?index) AS ?first) (MAX(?index) AS ?last)
       (SUM(?seconds) AS ?total) WHERE {
  ?run cnnprov:runId ?id . ?epoch a cnnprov:Epoch ; cnnprov:partOfRun ?run ; cnnprov:epochIndex ?index .
  OPTIONAL { ?epoch cnnprov:durationSeconds ?seconds }
} GROUP BY ?id"""

_RATE_SERIES = """SELECT ?id ?old ?new ?changes WHERE {
  ?run cnnprov:runId ?id ; prov:used ?setting .
  ?series a cnnprov:LearningRateSeries ; cnnprov:seriesOf ?setting ; prov:wasDerivedFrom ?before ;
          cnnprov:seriesLast ?new ; cnnprov:seriesCount ?changes ; prov:generatedAtTime ?time .
  OPTIONAL { ?before mls:hasValue ?start } OPTIONAL { ?before cnnprov:seriesLast ?last }
  BIND (COALESCE(?last, ?start) AS ?old)
} ORDER BY ?time"""

_VALUES = """SELECT DISTINCT ?id ?v ?name ?value ?low ?high ?count ?time ?by_run WHERE {
  ?run cnnprov:runId ?id .
  { ?v prov:wasGeneratedBy ?run . BIND (true AS ?by_run) }
  UNION
  { ?epoch a cnnprov:Epoch ; cnnprov:partOfRun ?run . ?v prov:wasGeneratedBy ?epoch . BIND (false AS ?by_run) }
  ?v mls:specifiedBy/rdfs:label ?name .
  { ?v a mls:ModelEvaluation ; mls:hasValue ?value . BIND (?value AS ?low) BIND (?value AS ?high) BIND (1 AS ?count) }
  UNION
  { ?v a cnnprov:MetricSeries ; cnnprov:seriesLast ?value ; cnnprov:seriesMin ?low ; cnnprov:seriesMax ?high ;
       cnnprov:seriesCount ?count }
  OPTIONAL { ?v prov:generatedAtTime ?time }
}"""

_CHECKPOINTS = """SELECT DISTINCT ?id ?c ?path ?sha ?epoch ?time WHERE {
  ?run cnnprov:runId ?id .
  { ?c prov:wasGeneratedBy ?run } UNION { ?e cnnprov:partOfRun ?run . ?c prov:wasGeneratedBy ?e }
  ?c a cnnprov:Checkpoint .
  OPTIONAL { ?c cnnprov:filePath ?path } OPTIONAL { ?c cnnprov:sha256 ?sha }
  OPTIONAL { ?c cnnprov:atEpoch ?epoch } OPTIONAL { ?c prov:generatedAtTime ?time }
} ORDER BY ?time ?epoch"""


def run_dot(store: ProvStore, run: str) -> str:
    """DOT text of one run's provenance graph (``run``: its id or a unique start of it), folded to stay readable."""
    run_id = store.resolve_run(run)

    def ask(query: str) -> list[dict[str, Any]]:
        return store.sparql(_PREFIXES + query, id=run_id).to_dicts()

    (facts,) = ask(_RUN) or [{}]
    name = facts.get("name") or run_id[:8]
    dot = Dot(title=f"provenance of run '{name}' ({run_id})")

    lines = [f"run '{name}'", run_id]
    status = facts.get("status")
    if status:
        attempts = facts.get("attempts") or 0
        lines.append(status + (f", {attempts} attempts" if attempts > 1 else ""))
    if facts.get("start"):
        end = facts.get("end")
        lines.append(f"{_time(facts['start'])} – {_time(end) if end else '…'}")
    if facts.get("seconds") is not None:
        lines.append(f"{facts['seconds']:.1f} s")
    run_node = dot.node("\n".join(lines), _ACTIVITY + ", penwidth=2")

    for agent in ask(_AGENTS):
        label = agent.get("label") or _local(agent["agent"])
        if agent.get("version"):
            label += f"\n{agent['version']}"
        kind = "person" if agent.get("person") else "software"
        dot.edge(run_node, dot.node(f"{label}\n({kind})", _AGENT), "wasAssociatedWith")
    if facts.get("plan"):
        plan = dot.node(f"plan\n{facts['plan']}", _ENTITY)
        dot.edge(run_node, plan, "hadPlan (qualified association)", "style=dashed")

    settings = ask(_SETTINGS)
    if settings:
        shown = [f"{s['name']} = {_value(s['value'])}" for s in settings[:_MAX_SETTINGS]]
        if len(settings) > _MAX_SETTINGS:
            shown.append(f"… and {len(settings) - _MAX_SETTINGS} more")
        node = dot.node(f"hyperparameters ({len(settings)})\n" + "\n".join(shown), _ENTITY, folded=True)
        dot.edge(run_node, node, "used")

    for arch in ask(_ARCHITECTURE):
        kinds = ", ".join(f"{k['n']} {_layer_kind(k['kind'])}" for k in ask(_LAYER_KINDS))
        label = f"architecture: {arch['layers']} layers"
        if arch.get("params") is not None:
            label += f", {arch['params']:,} parameters"
        if kinds:
            label += f"\n{kinds}"
        dot.edge(run_node, dot.node(label, _ENTITY, folded=True), "used")

    optimizer_nodes: list[str] = []
    optimizers: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in ask(_OPTIMIZERS):
        optimizers[row["optimizer"]].append(row)
    for rows in optimizers.values():
        settings_text = ", ".join(
            f"{r['key'].split('.', 1)[-1]}={_value(r['value'])}" for r in rows if r.get("key") is not None
        )
        label = f"optimizer {_local_class(rows[0]['class'])}" + (f"\n{settings_text}" if settings_text else "")
        node = dot.node(label, _ENTITY)
        optimizer_nodes.append(node)
        dot.edge(run_node, node, "used")
    for scheduler in ask(_SCHEDULERS):
        label = f"LR scheduler {_local_class(scheduler['class'])}"
        if scheduler.get("interval"):
            label += f"\nsteps every {scheduler['interval']}"
        dot.edge(run_node, dot.node(label, _ENTITY), "used")
    for data in ask(_DATA):
        label = f"{data['role']} data"
        if data.get("class"):
            label += f"\n{data['class']}"
        if data.get("samples") is not None:
            label += f", {data['samples']:,} samples"
        dot.edge(run_node, dot.node(label, _ENTITY), "used")

    epochs_node = None
    (epochs,) = ask(_EPOCHS) or [{}]
    if epochs.get("n"):
        label = f"epoch {epochs['first']}" if epochs["n"] == 1 else f"epochs {epochs['first']}–{epochs['last']}"
        label += f"\n{epochs['n']} epoch{'s' if epochs['n'] != 1 else ''}"
        if epochs.get("total") is not None:
            label += f", {epochs['total']:.1f} s ({epochs['total'] / epochs['n']:.2f} s each)"
        epochs_node = dot.node(label, _ACTIVITY, folded=epochs["n"] > 1)
        dot.edge(epochs_node, run_node, "partOfRun", "style=dashed")
        if epochs["n"] > 1:
            dot.edge(epochs_node, epochs_node, "wasInformedBy (the epoch before)")

    series = ask(_RATE_SERIES)
    if series:
        rates = [_value(series[0]["old"])] + [_value(a["new"]) for a in series]
        if len(rates) > 6:
            rates = [*rates[:3], "…", *rates[-2:]]
        changes = sum(int(a["changes"]) for a in series)
        label = f"{len(series)} learning-rate series, {changes} change{'s' if changes != 1 else ''}"
        label += "\nlr " + " → ".join(rates)
        node = dot.node(label, _ENTITY, folded=len(series) > 1)
        for optimizer in optimizer_nodes:
            dot.edge(node, optimizer, "seriesOf (its learning rate)")

    for (measure, by_run), values in sorted(_group_values(ask(_VALUES)).items()):
        values.sort(key=lambda row: row[0])  # by time: the last one's last value is the measure's
        count = sum(int(row[4]) for row in values)
        label = f"{measure}: {count:,} value{'s' if count != 1 else ''}"
        if count > 1:
            low, high = min(row[1] for row in values), max(row[2] for row in values)
            label += f"\nfrom {_value(low)} to {_value(high)}, last {_value(values[-1][3])}"
        else:
            label += f"\n{_value(values[0][3])}"
        node = dot.node(label, _ENTITY, folded=count > 1)
        generator = run_node if by_run or epochs_node is None else epochs_node
        dot.edge(node, generator, "wasGeneratedBy")

    checkpoints = ask(_CHECKPOINTS)
    if checkpoints:
        last = checkpoints[-1]
        indexes = sorted({c["epoch"] for c in checkpoints if c.get("epoch") is not None})
        label = f"{len(checkpoints)} checkpoint{'s' if len(checkpoints) != 1 else ''}"
        if indexes:
            label += f" (epoch {indexes[0]})" if len(indexes) == 1 else f" (epochs {indexes[0]}–{indexes[-1]})"
        if last.get("path"):
            label += f"\nlast: {str(last['path']).replace(chr(92), '/').rsplit('/', 1)[-1]}"
        if last.get("sha"):
            label += f"\nsha256 {last['sha'][:12]}…"
        node = dot.node(label, _ENTITY, folded=len(checkpoints) > 1)
        dot.edge(node, epochs_node or run_node, "wasGeneratedBy")
        if len(checkpoints) > 1:
            dot.edge(node, node, "wasDerivedFrom (the one before)")
    return dot.text()


def _group_values(rows: list[dict[str, Any]]) -> dict[tuple[str, bool], list[tuple[Any, ...]]]:
    """Per measure and generator: (time, lowest, highest, last value, count) of each value or series."""
    groups: dict[tuple[str, bool], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        key = (row["name"], bool(row["by_run"]))
        groups[key].append((row.get("time") or "", row["low"], row["high"], row["value"], row["count"]))
    return groups


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "None"
    return str(value)


def _time(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if hasattr(moment, "strftime") else str(moment)


def _local(iri: str) -> str:
    return iri.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]


def _local_class(python_class: str) -> str:
    return str(python_class).rsplit(".", 1)[-1]


def _layer_kind(kind_iri: str) -> str:
    name = _local(kind_iri)
    return name[: -len("Layer")].lower() if name.endswith("Layer") else name
