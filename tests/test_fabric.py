"""A Lightning Fabric loop, and a plain loop driving RunRecorder, recorded as a Trainer's run is."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch

from cnnprov import ProvStore, RunRecorder
from cnnprov.errors import RecorderNotStartedError
from cnnprov.integrations.fabric import ProvFabricLogger

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fabric_loop.py"


def example():
    spec = importlib.util.spec_from_file_location("fabric_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fabric_example_records_epochs_layers_optimizer_and_data_unwrapped(tmp_path):
    store_path = tmp_path / "provenance"
    logger = example().train(str(store_path), epochs=3, limit=320)
    store = ProvStore(store_path)
    (run,) = store.runs().to_dicts()
    assert (run["run_id"], run["status"], run["epochs"]) == (logger.run_id, "success", 3)
    layers = store.query("layers", run=run["run_id"]).to_dicts()
    assert layers and not any("_forward_module" in layer["name"] or "module." in layer["name"] for layer in layers)
    from cnnprov.demo import DigitsCNN

    assert sum(layer["parameters"] for layer in layers) == sum(p.numel() for p in DigitsCNN().parameters())
    classes = store.sparql(
        "SELECT ?class WHERE { ?o a <https://w3id.org/cnnprov/ns#Optimizer> ; "
        "<https://w3id.org/cnnprov/ns#pythonClass> ?class }"
    ).column("class")
    assert classes == ["torch.optim.sgd.SGD"]  # not Fabric's FabricSGD
    changes = store.query("lr-adaptations", run=run["run_id"]).to_dicts()
    assert [(c["epoch"], c["old_lr"], c["new_lr"]) for c in changes] == [(1, 0.05, 0.025), (2, 0.025, 0.0125)]
    data = store.sparql(
        "SELECT ?role ?class ?n WHERE { ?d <https://w3id.org/cnnprov/ns#dataRole> ?role ; "
        "<https://w3id.org/cnnprov/ns#pythonClass> ?class ; <https://w3id.org/cnnprov/ns#sampleCount> ?n }"
    ).to_dicts()
    assert {(d["role"], d["class"]) for d in data} == {
        ("train", "torch.utils.data.dataset.TensorDataset"),
        ("validation", "torch.utils.data.dataset.TensorDataset"),
    }
    metrics = {row["metric"]: row for row in store.query("epoch-metrics", run=run["run_id"]).to_dicts()}
    assert "val_acc" in metrics and "train_loss" not in metrics  # the loss is step-level: a series
    values = store.metric_values(run["run_id"]).to_dicts()
    assert {(row["metric"], row["level"]) for row in values} == {("train_loss", "step"), ("val_acc", "epoch")}
    series = store.query("epoch-metrics", run=run["run_id"], level="step").to_dicts()
    assert [row["epoch"] for row in series] == [0, 1, 2]
    losses = [row for row in values if row["metric"] == "train_loss"]
    assert [row["step"] for row in losses] == list(range(len(losses)))  # every step, in order
    assert sum(row["n_values"] for row in series) == len(losses) and len({row["n_values"] for row in series}) == 1


def test_a_fabric_loop_that_raises_is_recorded_failed_with_its_error(tmp_path):
    store_path = tmp_path / "provenance"
    logger = ProvFabricLogger(store=store_path)
    fabric = L.Fabric(accelerator="cpu", devices=1, loggers=[logger])
    model = fabric.setup(torch.nn.Linear(2, 1))
    logger.log_graph(model)
    with pytest.raises(FloatingPointError), logger.recording():
        for epoch in range(3):
            with logger.epoch(epoch):
                fabric.log_dict({"loss": 1.0 / (epoch + 1)}, step=epoch)
                if epoch == 1:
                    raise FloatingPointError("loss is nan")
    (run,) = ProvStore(store_path).runs().to_dicts()
    assert (run["status"], run["epochs"]) == ("failed", 2)
    errors = ProvStore(store_path).sparql(
        "SELECT ?m WHERE { ?r a <https://w3id.org/cnnprov/ns#TrainingRun> ; "
        "<https://w3id.org/cnnprov/ns#errorMessage> ?m }"
    ).column("m")
    assert errors == ["loss is nan"]


def test_the_run_recorder_docstring_example_works_as_written_twice_in_one_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = RunRecorder.__doc__ or ""
    code = textwrap.dedent(doc.split("Example::", 1)[1])
    for _ in range(2):  # a second run in the process finds the store let go of
        exec(compile(code, "RunRecorder example", "exec"), {"RunRecorder": RunRecorder})
    runs = ProvStore(tmp_path / "provenance").runs().to_dicts()
    assert [r["name"] for r in runs] == ["baseline", "baseline"] and {r["status"] for r in runs} == {"success"}


def test_recording_before_start_or_after_close_says_what_to_do(tmp_path):
    recorder = RunRecorder(tmp_path / "provenance")
    with pytest.raises(RecorderNotStartedError, match=r"call its start\(\)"):
        recorder.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(RecorderNotStartedError):
        recorder.epoch_started(0)
    recorder.start()
    recorder.log_metrics({"loss": 1.0}, step=0)
    recorder.finish("success")
    recorder.close()
    with pytest.raises(RecorderNotStartedError, match=r"start\(\) again"):
        recorder.log_metrics({"loss": 0.5}, step=1)
    values = ProvStore(tmp_path / "provenance").sparql(
        "SELECT ?v WHERE { ?x <http://www.w3.org/ns/mls#hasValue> ?v ; "
        "<http://www.w3.org/ns/mls#specifiedBy> [ <http://www.w3.org/2000/01/rdf-schema#label> 'loss' ] }"
    ).column("v")
    assert values == [1.0]  # what came before the misuse is kept


SOFTWARE = (
    "SELECT ?name WHERE { ?run a <https://w3id.org/cnnprov/ns#TrainingRun> ; "
    "<http://www.w3.org/ns/prov#wasAssociatedWith> ?agent . "
    "?agent a <http://www.w3.org/ns/prov#SoftwareAgent> ; <http://www.w3.org/2000/01/rdf-schema#label> ?name }"
)


def test_a_plain_loop_is_not_said_to_have_run_with_lightning_and_a_fabric_loop_is(tmp_path):
    plain = RunRecorder(tmp_path / "plain")
    plain.start()
    plain.finish("success")
    plain.close()
    assert sorted(ProvStore(tmp_path / "plain").sparql(SOFTWARE).column("name")) == ["cnnprov", "python", "torch"]
    fabric_logger = ProvFabricLogger(store=tmp_path / "fabric")
    fabric_logger.log_metrics({"loss": 1.0}, step=0)
    fabric_logger.finalize("success")
    names = ProvStore(tmp_path / "fabric").sparql(SOFTWARE).column("name")
    assert sorted(names) == ["cnnprov", "lightning", "python", "torch"]
