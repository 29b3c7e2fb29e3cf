"""The ``cnnprov`` command as users and scripts meet it: a real subprocess on a real store.

Every test runs the console script (``python -m cnnprov.cli`` or the installed
``cnnprov`` script) against the session store ``sweep_store`` (two finished runs,
dropout 0.0 and 0.5, two epochs each), which is only read. Tests that need to
write train into their own ``tmp_path``. What the CLI prints is checked against
what the store holds, read independently with pyoxigraph (read-only) and rdflib.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import re
import sys
from pathlib import Path

import pyoxigraph as ox
import pytest
import rdflib

from cnnprov import RunRecorder
from cnnprov.demo import run_sweep

from helpers import CLI, TINY_LIMIT, cli, cli_env, ok

SCRIPT = Path(sys.executable).with_name("cnnprov")
QUERIES_DIR = Path(__file__).resolve().parents[1] / "queries"

PROV = "http://www.w3.org/ns/prov#"
MLS = "http://www.w3.org/ns/mls#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
CNNPROV = "https://w3id.org/cnnprov/ns#"

RUNS_COLUMNS = ["run_id", "name", "status", "started", "ended", "epochs", "stages"]
SWEEP_NAMES = {"dropout=0.0": 0.0, "dropout=0.5": 0.5}

# A query file with an int parameter: runs that recorded at least some epochs.
MIN_EPOCHS_QUERY = """\
# Runs that recorded at least a number of epochs.
#
# Parameters:
#   min_epochs: the least number of epochs (default 1)
#
# Example: cnnprov query min-epochs.rq --param min_epochs=2
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
SELECT ?run_id ?epochs ?min_epochs
WHERE {
  {
    SELECT ?run_id (COUNT(DISTINCT ?epoch) AS ?epochs)
    WHERE { ?run cnnprov:runId ?run_id . ?epoch a cnnprov:Epoch ; cnnprov:partOfRun ?run }
    GROUP BY ?run_id
  }
  FILTER(?epochs >= ?min_epochs)
}
ORDER BY ?run_id
"""

# A query file with a `run` parameter, which takes a run id or the start of one.
ONE_RUN_QUERY = """\
# The name of one run.
#
# Parameters:
#   run: a run id, or the start of one (required)
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
SELECT DISTINCT ?run ?run_id ?name WHERE { ?r cnnprov:runId ?run ; cnnprov:runId ?run_id ; rdfs:label ?name }
"""


# -- helpers -----------------------------------------------------------------------






def fails(*args: str | os.PathLike, **kwargs) -> str:
    """The one-line error of a command that must fail cleanly."""
    result = cli(*args, **kwargs)
    assert result.returncode != 0, f"expected failure, got stdout:\n{result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("cnnprov: error: "), lines[0]
    return lines[0]


def store_quads(path: Path) -> list[ox.Quad]:
    """The quads of the run graphs, read without locking the store."""
    store = ox.Store.read_only(str(path))
    try:
        return [q for q in store if q.graph_name != ox.DefaultGraph()]
    finally:
        del store


def as_rdflib_quads(quads: list[ox.Quad]) -> set[tuple]:
    dataset = rdflib.Dataset()
    dataset.parse(data=ox.serialize(quads, format=ox.RdfFormat.N_QUADS).decode("utf-8"), format="nquads")
    return set(dataset.quads((None, None, None, None)))


def parsed_quads(data: str, rdflib_format: str) -> set[tuple]:
    dataset = rdflib.Dataset()
    dataset.parse(data=data, format=rdflib_format)
    return set(dataset.quads((None, None, None, None)))


def expected_best(path: Path, metric: str, order: str) -> dict[str, float]:
    """The best value of ``metric`` in each run (by run id), from the raw quads, without SPARQL."""
    quads = store_quads(path)
    triples = {q.triple for q in quads}
    by_subject: dict[ox.Node, list[ox.Triple]] = {}
    for t in triples:
        by_subject.setdefault(t.subject, []).append(t)

    def objects(subject, predicate: str) -> list:
        return [t.object for t in by_subject.get(subject, ()) if t.predicate.value == predicate]

    measures = {
        t.subject
        for t in triples
        if t.predicate.value == RDFS + "label" and t.object.value == metric
        and ox.NamedNode(MLS + "EvaluationMeasure") in objects(t.subject, RDF_TYPE)
    }
    values: dict[str, list[float]] = {}
    for t in triples:
        if t.predicate.value != MLS + "specifiedBy" or t.object not in measures:
            continue
        (value,) = objects(t.subject, MLS + "hasValue")
        (activity,) = objects(t.subject, PROV + "wasGeneratedBy")
        runs = objects(activity, CNNPROV + "partOfRun") or [activity]
        (run_id,) = objects(runs[0], CNNPROV + "runId")
        values.setdefault(run_id.value, []).append(float(value.value))
    pick = min if order == "min" else max
    return {run_id: pick(vs) for run_id, vs in values.items()}


def hyperparameter_pairs(text: str) -> list[tuple[str, str]]:
    return [tuple(pair.split("=", 1)) for pair in text.split(", ")]


@pytest.fixture(scope="module")
def runs(sweep_store) -> list[dict]:
    return json.loads(ok("runs", "--format", "json", "--store", sweep_store.path))


@pytest.fixture(scope="module")
def run_ids(runs) -> dict[str, str]:
    """Run id by run name."""
    return {run["name"]: run["run_id"] for run in runs}


# -- 1. runs -------------------------------------------------------------------------
def test_runs_json_has_one_object_per_run(sweep_store, runs):
    assert isinstance(runs, list) and len(runs) == 2
    assert {run["name"] for run in runs} == set(SWEEP_NAMES)
    stored_ids = {q.object.value for q in store_quads(sweep_store.path) if q.predicate.value == CNNPROV + "runId"}
    assert {run["run_id"] for run in runs} == stored_ids
    for run in runs:
        assert list(run) == RUNS_COLUMNS
        assert run["status"] == "success"
        assert run["epochs"] == 2 and isinstance(run["epochs"], int)
        assert run["stages"] == "fit"
        started = dt.datetime.fromisoformat(run["started"])
        ended = dt.datetime.fromisoformat(run["ended"])
        assert started.tzinfo is not None and started <= ended


def test_runs_csv_has_a_header_and_a_row_per_run(sweep_store, runs):
    rows = list(csv.reader(io.StringIO(ok("runs", "--format", "csv", "--store", sweep_store.path))))
    assert rows[0] == RUNS_COLUMNS
    assert len(rows) == 3
    by_id = {row[0]: dict(zip(RUNS_COLUMNS, row, strict=False)) for row in rows[1:]}
    for run in runs:
        row = by_id[run["run_id"]]
        assert row["name"] == run["name"] and row["status"] == "success" and int(row["epochs"]) == 2
        assert dt.datetime.fromisoformat(row["started"]) == dt.datetime.fromisoformat(run["started"])


@pytest.mark.parametrize("columns", [None, "60"])
def test_runs_table_never_cuts_run_ids(sweep_store, runs, columns):
    env = cli_env(COLUMNS=columns) if columns else cli_env()
    table = ok("runs", "--store", sweep_store.path, env=env)
    lines = table.splitlines()
    assert lines[0].split()[0] == "run_id"
    for run in runs:
        (line,) = [line for line in lines if run["name"] in line]
        assert line.split()[0] == run["run_id"]


def test_run_ids_are_accepted_by_export_and_run_parameters(sweep_store, run_ids, tmp_path):
    query_file = tmp_path / "one-run.rq"
    query_file.write_text(ONE_RUN_QUERY, encoding="utf-8")
    for name, run_id in run_ids.items():
        (other,) = set(run_ids.values()) - {run_id}
        for given in (run_id, run_id[:8]):
            exported = ok("export", "--run", given, "--format", "nquads", "--store", sweep_store.path)
            assert run_id in exported and other not in exported
            answer = ok("query", query_file, "--param", f"run={given}", "-f", "json", "--store", sweep_store.path)
            rows = json.loads(answer)
            assert rows == [{"run_id": run_id, "name": name}]


# -- 2. best-runs ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "metric", "order"),
    [
        ((), "val_acc", "max"),
        (("order=max", "metric=train_acc_epoch"), "train_acc_epoch", "max"),
        (("order=min", "metric=val_loss"), "val_loss", "min"),
    ],
)
def test_best_runs_ranks_by_the_best_value(sweep_store, run_ids, params, metric, order):
    args = [a for p in params for a in ("--param", p)]
    rows = json.loads(ok("query", "best-runs", *args, "--format", "json", "--store", sweep_store.path))
    expected = expected_best(sweep_store.path, metric, order)
    assert len(expected) == 2
    assert [row["run_id"] for row in rows] and {row["run_id"] for row in rows} == set(run_ids.values())
    assert len(rows) == 2
    for row in rows:
        assert row["best"] == pytest.approx(expected[row["run_id"]])
        assert isinstance(row["epoch"], int) and not isinstance(row["epoch"], bool) and row["epoch"] in (0, 1)
        assert row["run_id"] == run_ids[row["run_name"]]
    bests = [row["best"] for row in rows]
    assert bests == sorted(bests, reverse=(order == "max"))


def test_best_runs_names_each_runs_dropout(sweep_store):
    rows = json.loads(ok("query", "best-runs", "--format", "json", "--store", sweep_store.path))
    for row in rows:
        values = {}
        for name, value in hyperparameter_pairs(row["hyperparameters"]):
            values.setdefault(name, set()).add(float(value) if name == "dropout" else value)
        assert values["dropout"] == {SWEEP_NAMES[row["run_name"]]}


def test_best_runs_lists_each_hyperparameter_once(sweep_store):
    """Hyperparameter IRIs and their labels live in every run's graph; one run must not list them twice."""
    rows = json.loads(ok("query", "best-runs", "--format", "json", "--store", sweep_store.path))
    for row in rows:
        names = [name for name, _ in hyperparameter_pairs(row["hyperparameters"])]
        assert len(names) == len(set(names)), row["hyperparameters"]


# -- 3. parameters are bound, not pasted ---------------------------------------------------------
@pytest.mark.parametrize("value", ['val_acc" } #', "x' OR 1=1"])
def test_parameters_are_terms_not_text(sweep_store, value):
    before = set(ok("export", "--format", "nquads", "--store", sweep_store.path).splitlines())
    result = cli("query", "best-runs", "--param", f"metric={value}", "--format", "json", "--store", sweep_store.path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert "(no results)" in ok("query", "best-runs", "--param", f"metric={value}", "--store", sweep_store.path)
    after = set(ok("export", "--format", "nquads", "--store", sweep_store.path).splitlines())
    assert after == before and len(before) == len(store_quads(sweep_store.path))


def test_query_file_with_an_int_parameter(sweep_store, run_ids, tmp_path):
    query_file = tmp_path / "q.rq"
    query_file.write_text(MIN_EPOCHS_QUERY, encoding="utf-8")
    everything = sorted(run_ids.values())

    def ids(*args: str) -> list[str]:
        rows = json.loads(ok("query", query_file, *args, "--format", "json", "--store", sweep_store.path))
        assert all(set(row) == {"run_id", "epochs"} for row in rows)
        return [row["run_id"] for row in rows]

    assert ids() == everything  # default 1
    # Bound as an integer: a string "2" would not compare with the epoch count at all.
    assert ids("--param", "min_epochs=2") == everything
    assert ids("-p", "min_epochs=3") == []


# -- 4. export ---------------------------------------------------------------------------------
def test_export_turtle_is_the_union_of_the_run_graphs(sweep_store):
    graph = rdflib.Graph().parse(data=ok("export", "--store", sweep_store.path), format="turtle")
    expected = {(s, p, o) for s, p, o, _ in as_rdflib_quads(store_quads(sweep_store.path))}
    assert len(expected) > 100
    assert set(graph) == expected


@pytest.mark.parametrize(("fmt", "rdflib_format"), [("trig", "trig"), ("nquads", "nquads"), ("jsonld", "json-ld")])
def test_export_datasets_parse_back_to_the_stored_quads(sweep_store, fmt, rdflib_format):
    stored = store_quads(sweep_store.path)
    quads = parsed_quads(ok("export", "--format", fmt, "--store", sweep_store.path), rdflib_format)
    assert len(quads) == len(stored)
    assert quads == as_rdflib_quads(stored)


def test_export_of_one_run_by_id_prefix(sweep_store, run_ids):
    stored = store_quads(sweep_store.path)
    for run_id in run_ids.values():
        (other,) = set(run_ids.values()) - {run_id}
        bundle = {
            q.graph_name
            for q in stored
            if q.predicate.value == CNNPROV + "runId" and q.object.value == run_id
        }
        assert len(bundle) == 1
        expected = as_rdflib_quads([q for q in stored if q.graph_name in bundle])

        turtle = ok("export", "--run", run_id[:6], "--store", sweep_store.path)
        assert run_id in turtle and other not in turtle
        graph = rdflib.Graph().parse(data=turtle, format="turtle")
        assert set(graph) == {(s, p, o) for s, p, o, _ in expected}
        trig = ok("export", "--run", run_id[:6], "--format", "trig", "--store", sweep_store.path)
        assert parsed_quads(trig, "trig") == expected


def test_export_to_a_file_writes_nothing_to_stdout(sweep_store, tmp_path):
    target = tmp_path / "runs.trig"
    result = cli("export", "--format", "trig", "-o", target, "--store", sweep_store.path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    written = target.read_text(encoding="utf-8")
    assert written == ok("export", "--format", "trig", "--store", sweep_store.path)
    assert len(parsed_quads(written, "trig")) == len(store_quads(sweep_store.path))


# -- 5. errors ------------------------------------------------------------------------------------
def test_error_no_such_store(tmp_path):
    missing = tmp_path / "none"
    line = fails("runs", "--store", missing)
    assert str(missing) in line
    assert not missing.exists()


def test_error_store_is_a_plain_file(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("not a store")
    line = fails("query", "best-runs", "--store", plain)
    assert str(plain) in line and "not a provenance store" in line
    assert plain.read_text() == "not a store"


def test_error_a_query_whose_service_cannot_be_reached_fails_in_one_line(sweep_store, tmp_path):
    query_file = tmp_path / "federated.rq"
    query_file.write_text("SELECT * WHERE { SERVICE <http://127.0.0.1:9/sparql> { ?s ?p ?o } }\n")
    assert "failed while it ran" in fails("query", query_file, "--store", sweep_store.path)


@pytest.mark.parametrize("url", ["http://[::1", "http://:80/x", "http://127.0.0.1:port/"])
def test_error_a_malformed_endpoint_url_is_named(url):
    assert f"'{url}'" in fails("runs", "--store", url)


def test_error_no_such_query(sweep_store):
    line = fails("query", "no-such-question", "--store", sweep_store.path)
    assert "no-such-question" in line and "best-runs" in line


def test_error_malformed_query_file_names_query_and_position(sweep_store, tmp_path):
    broken = tmp_path / "broken.rq"
    broken.write_text("# A broken question.\n#\n# Parameters: none\nSELECT ?x WHEER { ?x ?y ?z }\n", encoding="utf-8")
    line = fails("query", broken, "--store", sweep_store.path)
    assert "'broken'" in line
    position = re.search(r"\b(\d+):(\d+)\b", line)
    assert position, line
    assert int(position[1]) == 4  # the SELECT line of the file, header included


def test_error_unknown_parameter(sweep_store):
    line = fails("query", "best-runs", "--param", "nope=1", "--store", sweep_store.path)
    assert "nope" in line and "metric" in line


def test_error_parameter_without_value(sweep_store):
    line = fails("query", "best-runs", "--param", "metric", "--store", sweep_store.path)
    assert "NAME=VALUE" in line and "metric" in line


def test_error_export_unknown_run(sweep_store):
    line = fails("export", "--run", "zzzz-no-such-run", "--store", sweep_store.path)
    assert "zzzz-no-such-run" in line


def test_error_int_parameter_not_a_number(sweep_store, tmp_path):
    query_file = tmp_path / "q.rq"
    query_file.write_text(MIN_EPOCHS_QUERY, encoding="utf-8")
    line = fails("query", query_file, "--param", "min_epochs=abc", "--store", sweep_store.path)
    assert "min_epochs" in line and "'abc'" in line and "int" in line


def test_error_export_output_in_a_missing_directory(sweep_store, tmp_path):
    target = tmp_path / "no-such-dir" / "runs.ttl"
    line = fails("export", "-o", target, "--store", sweep_store.path)
    assert str(target) in line
    assert not target.parent.exists()


def test_error_query_file_not_utf8(sweep_store, tmp_path):
    latin1 = tmp_path / "latin1.rq"
    latin1.write_bytes("# Runs r\xe9sum\xe9.\nSELECT ?s WHERE { ?s ?p ?o } LIMIT 1\n".encode("latin-1"))
    line = fails("query", latin1, "--store", sweep_store.path)
    assert "latin1" in line


def test_error_required_run_parameter_missing(sweep_store, tmp_path):
    query_file = tmp_path / "one-run.rq"
    query_file.write_text(ONE_RUN_QUERY, encoding="utf-8")
    line = fails("query", query_file, "--store", sweep_store.path)
    assert "run" in line and "--param run=" in line


# -- 6. help and --list ---------------------------------------------------------------------------
def test_help_shows_examples():
    command = [str(SCRIPT)] if SCRIPT.exists() else CLI
    top = ok("--help", command=command)
    assert "examples:" in top
    assert "cnnprov query best-runs" in top and "cnnprov export" in top
    query_help = ok("query", "--help")
    assert "example: cnnprov query best-runs --param" in query_help
    assert "--param" in query_help and "--list" in query_help


def _question(path: Path) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        body = line.lstrip("#").strip()
        if not line.startswith("#") or not body:
            break
        lines.append(body)
    return " ".join(lines)


def test_query_list_names_each_bundled_query_and_its_question():
    lines = ok("query", "--list").splitlines()
    names = sorted(path.stem for path in QUERIES_DIR.glob("*.rq"))
    assert {"best-runs", "runs", "epoch-times"} <= set(names)
    assert [line for line in lines if line and not line.startswith(" ")] == names
    for name in names:
        index = lines.index(name)
        assert lines[index + 1].strip() == _question(QUERIES_DIR / f"{name}.rq")
    best = lines.index("best-runs")
    assert any(line.strip().startswith("--param metric=") for line in lines[best + 2 : best + 4])


# -- 7. reading stays light -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [("runs",), ("runs", "--where", "val_acc > 0.1 and dropout < 0.3"), ("query", "best-runs"),
     ("export", "--format", "nquads"), ("reproduce", "{run}"), ("reproduce", "{run}", "--format", "json")],
    ids=["runs", "runs-where", "query", "export", "reproduce", "reproduce-json"],
)
def test_reading_commands_do_not_import_torch_or_lightning(sweep_store, args):
    run = sweep_store.runs().column("run_id")[0]
    args = tuple(run if arg == "{run}" else arg for arg in args)
    result = cli(*args, "--store", sweep_store.path, command=[sys.executable, "-X", "importtime", "-m", "cnnprov.cli"])
    assert result.returncode == 0, result.stderr
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert "pyoxigraph" in imported  # the check sees what was imported
    heavy = {"torch", "lightning", "pytorch_lightning", "lightning_fabric"}
    assert [m for m in imported if m.split(".")[0] in heavy] == []


# -- 8. the default store -------------------------------------------------------------------------
def test_default_store_is_provenance_in_the_working_directory(sweep_store, run_ids, tmp_path):
    (result,) = run_sweep(tmp_path / "provenance", [{"dropout": 0.25}], max_epochs=1, limit=TINY_LIMIT, progress=None)

    here = json.loads(ok("runs", "--format", "json", cwd=tmp_path, env=cli_env()))
    assert [(run["run_id"], run["name"]) for run in here] == [(result.run_id, "dropout=0.25")]
    # $CNNPROV_STORE wins over ./provenance ...
    there = json.loads(ok("runs", "--format", "json", cwd=tmp_path, env=cli_env(CNNPROV_STORE=str(sweep_store.path))))
    assert {run["run_id"] for run in there} == set(run_ids.values())
    # ... and --store over $CNNPROV_STORE.
    chosen = json.loads(
        ok("runs", "-f", "json", "--store", tmp_path / "provenance", cwd=tmp_path,
           env=cli_env(CNNPROV_STORE=str(sweep_store.path)))
    )
    assert [run["run_id"] for run in chosen] == [result.run_id]
    # Somewhere without a store the error names the default it looked for.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "'provenance'" in fails("runs", cwd=elsewhere, env=cli_env())


def test_json_output_keeps_infinite_and_nan_values_as_text_json_can_hold(tmp_path):
    query_file = tmp_path / "nonfinite.rq"
    query_file.write_text(
        'SELECT ?x WHERE { VALUES ?x { "INF"^^<http://www.w3.org/2001/XMLSchema#double> '
        '"-INF"^^<http://www.w3.org/2001/XMLSchema#double> "NaN"^^<http://www.w3.org/2001/XMLSchema#double> '
        '"1.5"^^<http://www.w3.org/2001/XMLSchema#double> } }'
    )
    store = tmp_path / "provenance"
    recorder = RunRecorder(store)  # a store to ask
    recorder.start()
    recorder.close(wait=True)
    rows = json.loads(ok("query", query_file, "--format", "json", "--store", store))
    values = [row["x"] for row in rows]
    assert sorted(map(str, values)) == ["-Infinity", "1.5", "Infinity", "NaN"]
    assert [float(v) for v in values if v != "NaN"].count(math.inf) == 1  # float() reads them back
