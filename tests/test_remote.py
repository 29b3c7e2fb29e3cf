"""A shared store: training logs into a real Oxigraph server on 127.0.0.1, and every reading
command takes its URL. Two trainings log at once; a server that goes away mid-run costs
nothing but a spool file that ``cnnprov push`` sends later; ``cnnprov serve`` puts a store
directory on the SPARQL protocol.

Each test starts its own server (``oxigraph serve`` from PyPI's ``oxigraph``, in the test
extra) on a free port of 127.0.0.1 and stops it afterwards.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pyoxigraph as ox
import pytest

from cnnprov import ProvLogger, ProvStore, RunRecorder
from cnnprov.analysis.query_library import bundled_queries, load_query
from cnnprov.demo import DigitsCNN
from cnnprov.rdf.sparql import bind_values, term_text
from cnnprov.storage.location import StoreLocation
from cnnprov.storage.remote import RemoteStore, RemoteTarget
from cnnprov.storage.spool import Spool

from helpers import CLI, OxigraphServer, cli, free_port, tiny_data, tiny_trainer

HERE = Path(__file__).parent
CNNPROV = "https://w3id.org/cnnprov/ns#"
MLS = "http://www.w3.org/ns/mls#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"

# One tiny training process: a ProvLogger on the server and a CSVLogger beside it, to compare with.
TRAIN_SCRIPT = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(HERE)!r})
from lightning.pytorch.loggers import CSVLogger
from helpers import tiny_data, tiny_trainer
from cnnprov import ProvLogger
from cnnprov.demo import DigitsCNN
url, root, name, epochs = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
logger = ProvLogger(store=url, run_name=name)
csv_logger = CSVLogger(root, name="csv", version=0)
tiny_trainer(root, [logger, csv_logger], max_epochs=epochs).fit(DigitsCNN(), datamodule=tiny_data())
print(logger.run_id, csv_logger.log_dir, flush=True)
"""


@pytest.fixture
def server(tmp_path):
    running = OxigraphServer(tmp_path / "oxigraph").start()
    yield running
    running.kill()




def metric_counts(store: ProvStore, run_id: str) -> dict[str, int]:
    """How many values of each metric the run logged: entities, and the points of series."""
    return dict(Counter(row["metric"] for row in store.metric_values(run_id)))


def csv_counts(log_dir: str) -> dict[str, int]:
    counts: Counter = Counter()
    with open(Path(log_dir) / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            counts.update(name for name, value in row.items() if value != "" and name not in ("epoch", "step"))
    return dict(counts)


def test_a_run_logged_to_the_server_reads_like_a_local_one(server, tmp_path):
    logger = ProvLogger(store=server.url, run_name="shared")
    tiny_trainer(tmp_path / "root", logger).fit(DigitsCNN(), datamodule=tiny_data())

    listed = cli("runs", "--store", server.url, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    (run,) = json.loads(listed.stdout)
    assert (run["run_id"], run["name"], run["status"], run["epochs"]) == (logger.run_id, "shared", "success", 2)

    best = cli(
        "query", "best-runs", "--store", server.url, "--param", "metric=val_loss", "--param", "order=min", "-f", "json"
    )
    assert best.returncode == 0, best.stderr
    (row,) = json.loads(best.stdout)
    losses = ProvStore(server.url).query("epoch-metrics", run=logger.run_id).to_dicts()
    assert row["best"] == min(r["value"] for r in losses if r["metric"] == "val_loss")

    exported = cli("export", "--store", server.url, "--format", "nquads", "--run", logger.run_id[:8])
    assert exported.returncode == 0, exported.stderr
    quads = list(ox.parse(exported.stdout.encode(), format=ox.RdfFormat.N_QUADS))
    assert {q.graph_name.value for q in quads} == {f"https://w3id.org/cnnprov/id/bundle/run-{logger.run_id}"}

    dataset = ProvStore(server.url).dataset()  # rdflib over the endpoint, default graph = the union
    (count,) = next(iter(dataset.query(f"SELECT (COUNT(?e) AS ?n) WHERE {{ ?e a <{CNNPROV}Epoch> }}")))
    assert int(count) == 2
    assert not (tmp_path / "cnnprov-spool").exists() and not Path("cnnprov-spool").exists()


def test_every_bundled_query_answers_over_http_as_on_the_embedded_store(sweep_store, tmp_path):
    """The same records, embedded and on a server: every bundled query, with its parameters bound."""
    server = OxigraphServer(tmp_path / "oxigraph").start()
    try:
        RemoteStore(server.url).load(sweep_store.export("nquads"), format=ox.RdfFormat.N_QUADS)
        remote = ProvStore(server.url)
        run = sweep_store.runs().column("run_id")[0]
        checkpoint = sweep_store.sparql(f"SELECT ?path WHERE {{ ?c <{CNNPROV}filePath> ?path }} LIMIT 1").rows[0][0]
        required = {"run": run, "run_a": run, "run_b": sweep_store.runs().column("run_id")[1], "checkpoint": checkpoint,
                    "dataset": "TensorDataset", "name": "dropout"}
        calls = [("best-runs", {"metric": "val_loss", "order": "min"}), ("hyperparameters", {"include": "all"}),
                 ("epoch-metrics", {"run": run[:8], "max_values": 20}),
                 ("learning-curves", {"metric": "train_loss_step"})]
        for name in bundled_queries():
            needed = [p for p, spec in load_query(name).parameters.items() if spec.required]
            if set(needed) <= set(required):  # a query added later with a parameter unknown here waits for this list
                calls.append((name, {p: required[p] for p in needed}))
        answered = set()
        for name, params in calls:
            local, shared = sweep_store.query(name, **params), remote.query(name, **params)
            assert shared.columns == local.columns, name
            assert sorted(map(repr, shared.rows)) == sorted(map(repr, local.rows)), (name, params)
            answered |= {name} if len(local) else set()
        expected = {"runs", "best-runs", "hyperparameters", "epoch-metrics", "layers", "lineage", "compare-runs"}
        assert expected <= answered

        # an endpoint that is not Oxigraph: the union named with default-graph-uri, as the protocol says
        count = f"SELECT (COUNT(DISTINCT ?e) AS ?n) WHERE {{ ?e a <{CNNPROV}Epoch> }}"
        generic = RemoteStore(StoreLocation.parse(server.url, union="dataset"))
        assert next(iter(generic.query(count, use_default_graph_as_union=True)))["n"].value == "4"

        # bound values are terms: text that would break out of a literal finds nothing and harms nothing
        hostile = 'val_acc" } } ; DROP ALL ; #'
        assert len(remote.query("best-runs", metric=hostile)) == 0
        assert len(remote.query("best-runs")) == 2
    finally:
        server.kill()


def test_bound_variables_are_standard_values_blocks_and_terms_never_break_out():
    """Binding writes SPARQL 1.1 VALUES blocks: a query's parameter blocks get the terms, a variable
    without one gets a block at the start of the WHERE clause; any literal stays one term."""
    store = ox.Store()
    for name, value in (("a", 1), ("b", 2)):
        store.add(ox.Quad(ox.NamedNode(f"http://x/{name}"), ox.NamedNode("http://x/p"), ox.Literal(value), ox.NamedNode("http://x/g")))
    odd = ox.Literal('a\\u0022 "} ; DROP ALL ; # \\\\U0001F600 \x01\n')
    store.add(ox.Quad(ox.NamedNode("http://x/c"), ox.NamedNode("http://x/p"), odd, ox.NamedNode("http://x/g")))
    cases = [
        ("SELECT ?s WHERE { { ?s <http://x/p> ?o FILTER(?o = ?x) } }", 0),  # VALUES joins: the inner filter sees no ?x
        ("SELECT ?s WHERE { ?s <http://x/p> ?o FILTER(?o = ?x) }", 1),
        ("SELECT ?s WHERE { { SELECT ?s WHERE { VALUES ?x { 5 } ?s <http://x/p> ?o FILTER(?o = ?x) } } }", 1),
        ("SELECT ?s WHERE { { SELECT ?s ?x WHERE { ?s <http://x/p> ?x } } }", 1),
        ("SELECT ?s WHERE { VALUES (?x ?y) { (5 UNDEF) } ?s <http://x/p> ?x }", 1),  # a parameter block
        ("SELECT ?s WHERE { VALUES (?x ?s) { (5 <http://x/a>) } ?s <http://x/p> ?x }", 0),  # ?s: no parameter
        ("SELECT ?y WHERE { BIND(?x + 1 AS ?y) }", 1),
        ("SELECT (COUNT(*) AS ?n) WHERE { ?s <http://x/p> ?o FILTER(?o >= ?x) }", 1),
        ("# ?x {\nSELECT ?s WHERE { GRAPH ?g { ?s <http://x/p> ?o FILTER(STR(?o) != '?x }') } }", 3),
        ("SELECT ?s WHERE { ?s <http://x/p> ?x }", odd),
    ]
    for query, expected in cases:
        term = expected if isinstance(expected, ox.Literal) else ox.Literal(1)
        bound = bind_values(query, {"x": term_text(term), "y": None})
        rows = list(store.query(bound, use_default_graph_as_union=True))
        if isinstance(expected, ox.Literal):
            assert [row["s"] for row in rows] == [ox.NamedNode("http://x/c")], query
        else:
            count = int(rows[0][0].value) if query.startswith("SELECT (COUNT") else len(rows)
            assert count == (2 if query.startswith("SELECT (COUNT") else expected), query
        assert "DROP ALL" not in bound.replace(term_text(odd), "") or "DROP" in query
    assert bind_values("SELECT ?s WHERE { VALUES (?x ?y) { (1 2) } }", {"x": '"a"', "y": None}).endswith(
        'VALUES (?x ?y) { ("a" UNDEF) } }'
    )
    with pytest.raises(RuntimeError, match="SELECT and ASK"):
        bind_values("CONSTRUCT { ?s ?p ?x } WHERE { ?s ?p ?x }", {"x": '"1"'})


def test_two_trainings_log_into_one_server_at_once_and_nothing_is_lost(server, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CNNPROV_SPOOL=str(tmp_path / "spool"))
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", TRAIN_SCRIPT, server.url, str(tmp_path / name), name, str(epochs)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        for name, epochs in (("first", 3), ("second", 2))
    }
    finished = {name: process.communicate(timeout=240) for name, process in processes.items()}
    assert all(process.returncode == 0 for process in processes.values())
    store = ProvStore(server.url)
    runs = {row["name"]: row for row in store.runs()}
    assert {name: (row["status"], row["epochs"]) for name, row in runs.items()} == {
        "first": ("success", 3),
        "second": ("success", 2),
    }
    for name, (output, _) in finished.items():
        run_id, log_dir = output.split()
        assert runs[name]["run_id"] == run_id
        assert metric_counts(store, run_id) == csv_counts(log_dir)  # every value the CSVLogger saw
    assert not (tmp_path / "spool").exists()


def test_a_server_that_goes_away_mid_run_leaves_a_spool_that_push_sends(tmp_path):
    location, spool_dir, gate = tmp_path / "oxigraph", tmp_path / "spool", tmp_path / "gate"
    gate.mkdir()
    server = OxigraphServer(location).start()
    errors = (tmp_path / "training.err").open("w")
    training = subprocess.Popen(
        [sys.executable, str(HERE / "paced_training.py"), server.url, str(gate), "3"],
        stdout=subprocess.PIPE, stderr=errors, text=True,
        env=dict(os.environ, CNNPROV_SPOOL=str(spool_dir)),
    )
    try:
        for line in training.stdout:
            if line.strip() == "epoch 1 waiting":  # epoch 0 is on the server
                break
        (run,) = ProvStore(server.url).runs().to_dicts()
        # epoch 0 is stored; epoch 1 has started, and its start may still be on its way
        assert run["status"] == "running" and run["epochs"] in (1, 2)
        server.kill()  # the server goes away mid-run

        (gate / "go-1").touch()
        (gate / "go-2").touch()
        assert training.wait(timeout=120) == 0  # training finished as if nothing happened
        spool = spool_dir / f"{run['run_id']}.ru"
        assert Spool(spool).count() > 0
        assert f"cnnprov push --store {server.url} {spool}" in (tmp_path / "training.err").read_text()
    finally:
        server.kill()
        if training.poll() is None:
            training.kill()
        training.wait()
        errors.close()

    restarted = OxigraphServer(location).start()  # the same data, on another port
    try:
        (run,) = ProvStore(restarted.url).runs().to_dicts()
        # the end of the run is still in the spool, and its process is gone: it reads as crashed
        assert run["status"] == "crashed"
        pushed = cli("push", "--store", restarted.url, str(spool))
        assert pushed.returncode == 0, pushed.stderr
        assert not spool.exists()
        (run,) = ProvStore(restarted.url).runs().to_dicts()
        assert (run["status"], run["epochs"]) == ("success", 3)
        epochs = ProvStore(restarted.url).query("epoch-metrics", run=run["run_id"]).to_dicts()
        assert {row["epoch"] for row in epochs if row["metric"] == "val_acc"} == {0, 1, 2}
        assert ProvStore(restarted.url).sparql(
            f"SELECT ?status WHERE {{ ?run <{CNNPROV}status> ?status ; a <{CNNPROV}TrainingRun> }}"
        ).column("status") == ["success"]  # replaced, not added to
    finally:
        restarted.kill()


def test_serve_puts_a_store_directory_on_the_sparql_protocol(sweep_store):
    serving = subprocess.Popen(
        [*CLI, "serve", "--store", str(sweep_store.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = serving.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/sparql"), line
        query = urllib.parse.urlencode(
            {"query": f"SELECT (COUNT(DISTINCT ?r) AS ?n) WHERE {{ ?r <{CNNPROV}runId> ?id }}"}
        )
        request = urllib.request.Request(f"{url}?{query}", headers={"Accept": "application/sparql-results+json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert answer["results"]["bindings"][0]["n"]["value"] == "2"
        # the printed URL is a store for every reading command; the directory still reads too
        listed = cli("runs", "--store", url, "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == 2
        assert len(ProvStore(sweep_store.path).runs()) == 2
    finally:
        serving.send_signal(signal.SIGINT)  # Ctrl-C
        assert serving.wait(timeout=30) == 0
    assert not (sweep_store.path / "cnnprov-writer.json").exists()


def test_serve_on_a_store_a_training_process_holds_points_at_its_endpoint(store_path):
    from cnnprov import RunRecorder

    recorder = RunRecorder(store_path, name="holding")
    recorder.start()
    try:
        refused = cli("serve", "--store", str(store_path))
        assert refused.returncode == 1
        assert "training process" in refused.stderr and "/sparql" in refused.stderr, refused.stderr
    finally:
        recorder.finish()
        recorder.close()


def test_a_spool_is_one_sparql_update_that_push_can_also_apply_to_a_store_directory(tmp_path):
    """No server at all: writes spool at once, in order; `cnnprov push --store DIR` applies them locally."""
    away = RemoteStore(StoreLocation.parse(f"http://127.0.0.1:{free_port()}", retries=0))
    graph, run, status = ox.NamedNode("urn:x:g"), ox.NamedNode("urn:x:run"), ox.NamedNode(f"{CNNPROV}status")
    writes = RemoteTarget(away, spool=tmp_path / "run.ru")
    writes.extend([ox.Quad(run, status, ox.Literal("running"), graph)])
    writes.replace(run, status, graph, [ox.Literal('success \\u0022 "quoted"')])  # what the writer does for a Replace
    writes.close()
    assert writes.spooled == 2

    store_dir = tmp_path / "provenance"
    pushed = cli("push", "--store", str(store_dir), str(tmp_path / "run.ru"))
    assert pushed.returncode == 0, pushed.stderr
    assert not (tmp_path / "run.ru").exists()
    reopened = ox.Store(str(store_dir))
    statuses = [q.object.value for q in reopened.quads_for_pattern(run, status, None, graph)]
    assert statuses == ['success \\u0022 "quoted"']


def test_a_recorder_with_a_stored_run_id_continues_that_run_on_the_server(server):
    first = RunRecorder(server.url, name="resumed")
    first.start()
    first.epoch_started(0)
    first.log_metrics({"loss": 1.0, "epoch": 0}, step=0)
    first.epoch_ended(0)
    first.close()  # ended without finish: a run cut short
    again = RunRecorder(server.url, run_id=first.run_id)
    again.start()
    again.epoch_started(1)
    again.log_metrics({"loss": 0.5, "epoch": 1}, step=1)
    again.epoch_ended(1)
    again.finish("success")
    again.close()
    store = ProvStore(server.url)
    (run,) = store.runs().to_dicts()
    assert (run["run_id"], run["name"], run["status"], run["epochs"]) == (first.run_id, "resumed", "success", 2)
    attempts = store.sparql(f"SELECT ?a WHERE {{ ?a a <{CNNPROV}Attempt> }}").column("a")
    assert len(attempts) == 2  # the second start is a new attempt of the stored run, not the run again
