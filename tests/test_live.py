"""Analysis while training runs: another process reads the store a training process is writing."""

from __future__ import annotations

import json

import pytest
import rdflib

from cnnprov import ProvStore

from helpers import PacedTraining, cli


@pytest.fixture
def paced(tmp_path):
    training = PacedTraining(tmp_path / "provenance", tmp_path / "gate", epochs=3)
    yield training
    training.stop()


def test_every_read_command_answers_while_training_writes(paced, tmp_path):
    store_dir = tmp_path / "provenance"
    paced.wait_for("epoch 1 waiting")  # epoch 0 is over and stored; training is held at epoch 1

    (run,) = json.loads(cli("runs", "--store", str(store_dir), "--format", "json").stdout)
    assert (run["name"], run["status"], run["ended"]) == ("paced", "running", None)
    run_id = run["run_id"]

    store = ProvStore(store_dir)
    epochs = store.query("epoch-metrics", run=run_id).to_dicts()
    assert {row["epoch"] for row in epochs if row["metric"] == "val_acc"} == {0}

    unfinished = store.query("unfinished-runs").to_dicts()
    assert {row["state"] for row in unfinished} == {"running"}

    exported = cli("export", "--store", str(store_dir), "--format", "turtle", "--run", run_id[:8])
    assert exported.returncode == 0, exported.stderr
    graph = rdflib.Graph().parse(data=exported.stdout, format="turtle")
    assert len(graph) > 100

    picture = tmp_path / "curves.png"
    plotted = cli("plot", "learning-curves", "--store", str(store_dir), "-o", str(picture))
    assert plotted.returncode == 0, plotted.stderr
    assert picture.stat().st_size > 1000

    custom = tmp_path / "epochs.rq"
    custom.write_text(
        "# Epochs so far.\n#\n# Parameters: none\n#\n# Example: cnnprov query epochs.rq\n"
        "SELECT ?i ?end WHERE { ?e a <https://w3id.org/cnnprov/ns#Epoch> ; <https://w3id.org/cnnprov/ns#epochIndex> ?i"
        " OPTIONAL { ?e <http://www.w3.org/ns/prov#endedAtTime> ?end } }"
    )
    answered = json.loads(cli("query", str(custom), "--store", str(store_dir), "--format", "json").stdout)
    # epoch 0 completed; epoch 1 started (its start is stored as it begins, so it may be there) with no end
    epochs_so_far = sorted((row["i"], row["end"] is not None) for row in answered)
    assert epochs_so_far in ([(0, True)], [(0, True), (1, False)])

    dataset = store.dataset()  # rdflib, over the training process's SPARQL endpoint
    rows = list(
        dataset.query(
            "SELECT (COUNT(?e) AS ?n) WHERE { ?e a <https://w3id.org/cnnprov/ns#Epoch> ;"
            " <http://www.w3.org/ns/prov#endedAtTime> ?end }"
        )
    )
    assert int(rows[0][0]) == 1

    # ask again after another epoch: the answer moves on (not a snapshot taken when reading began)
    paced.release(1)
    paced.wait_for("epoch 2 waiting")
    epochs = store.query("epoch-metrics", run=run_id).to_dicts()
    assert {row["epoch"] for row in epochs if row["metric"] == "val_acc"} == {0, 1}

    paced.release(2)
    paced.wait_for("finished")
    assert paced.process.wait(timeout=60) == 0  # reading never broke the training
    (run,) = store.runs().to_dicts()  # the store is free again and opens directly
    assert (run["status"], run["epochs"]) == ("success", 3)
    assert not (store_dir / "cnnprov-writer.json").exists()


def test_a_killed_run_reads_as_crashed_and_a_live_one_as_running(paced, tmp_path):
    store_dir = tmp_path / "provenance"
    paced.wait_for("epoch 1 waiting")
    assert ProvStore(store_dir).query("unfinished-runs").column("state")[0] == "running"
    paced.stop()  # SIGKILL: no finalize, no atexit
    rows = ProvStore(store_dir).query("unfinished-runs").to_dicts()
    assert {row["state"] for row in rows} == {"crashed"}
    assert {row["process_id"] for row in rows} == {paced.process.pid}
