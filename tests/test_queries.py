"""The bundled query library, asked of a store whose runs differ in ways known in advance.

One store, trained for real once for the module: two runs that differ only in dropout, one with a
StepLR schedule (its learning rate halves at epochs 1 and 2) and a test stage, and one run that a
separate process started and left without an end, as a killed job does. Every answer is checked
against what the configurations imply, or against the store's raw quads read with pyoxigraph,
never against SPARQL of the test's own.
"""

from __future__ import annotations

import datetime
import getpass
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import pyoxigraph as ox
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import cnnprov
from cnnprov import ProvLogger, ProvStore
from cnnprov.analysis.provstore import QueryError
from cnnprov.demo import DigitsCNN, DigitsDataModule
from cnnprov.rdf.vocab import python_value

from helpers import ok

PROV = "http://www.w3.org/ns/prov#"
MLS = "http://www.w3.org/ns/mls#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
CP = "https://w3id.org/cnnprov/ns#"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"

EPOCHS = 3
IMAGES = 400  # 10 % validation, 10 % test: 320 training images, 20 batches of 16 per epoch
BATCHES = 20
CONFIGS = {
    "dropout-0.0": dict(dropout=0.0),
    "dropout-0.5": dict(dropout=0.5),
    "steplr": dict(step_size=1, gamma=0.5),  # lr 0.05 -> 0.025 at epoch 1 -> 0.0125 at epoch 2
}
DEFAULT_LR = 0.05
UNFINISHED_SEED = 123

# A process that records a run through RunRecorder, two epochs and the start of a third, and then
# exits without finish(): what is buffered is stored at interpreter exit, the end never is.
UNFINISHED_RUN = """
import sys, time
from cnnprov import RunRecorder
recorder = RunRecorder(sys.argv[1], name="unfinished")
recorder.start()
recorder.log_plan("my_project.models.Net")
recorder.log_hyperparameters({"lr": 0.2, "dropout": 0.5})
recorder.log_dataset("train", "my_project.data.Shards", sample_count=100, batch_size=10, batch_count=10)
step = 0
for epoch, (val_loss, val_acc) in enumerate([(0.5, 0.8), (0.8, 0.75)]):
    recorder.epoch_started(epoch)
    for _ in range(10):
        recorder.log_metrics({"train_loss_step": 1.0 / (step + 1), "epoch": epoch}, step=step)
        step += 1
    recorder.log_metrics({"val_loss": val_loss, "val_acc": val_acc, "epoch": epoch}, step=step - 1)
    recorder.epoch_ended(epoch)
recorder.epoch_started(2)
recorder.log_metrics({"train_loss_step": 0.3, "epoch": 2}, step=20)
time.sleep(0.01)
recorder.log_metrics({"train_loss_step": 0.2, "epoch": 2}, step=21)
print(recorder.run_id)
"""


# -- the raw record, read without SPARQL ---------------------------------------------------------
class Raw:
    """Every triple of the store's run graphs as subject -> predicate -> objects (Python values)."""

    def __init__(self, path: Path) -> None:
        store = ox.Store.read_only(str(path))
        self.triples: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        for quad in store:
            if quad.graph_name == ox.DefaultGraph():
                continue
            objects = self.triples[quad.subject.value][quad.predicate.value]
            value = python_value(quad.object)
            if value not in objects:
                objects.append(value)
        del store

    def get(self, subject: str, predicate: str) -> list[Any]:
        return self.triples.get(subject, {}).get(predicate, [])

    def one(self, subject: str, predicate: str) -> Any:
        values = self.get(subject, predicate)
        assert len(values) <= 1, (subject, predicate, values)
        return values[0] if values else None

    def subjects(self, predicate: str, obj: Any) -> list[str]:
        return [s for s, props in self.triples.items() if obj in props.get(predicate, [])]

    def run(self, run_id: str) -> str:
        (node,) = self.subjects(CP + "runId", run_id)
        return node

    def epochs(self, run_id: str) -> dict[int, str]:
        """Epoch index -> epoch node."""
        run = self.run(run_id)
        return {
            self.one(e, CP + "epochIndex"): e
            for e in self.subjects(CP + "partOfRun", run)
            if self.get(e, CP + "epochIndex")
        }

    def values(self, run_id: str) -> list[dict]:
        """Every metric value of a run: name, value, epoch (None outside epochs), step, time."""
        run = self.run(run_id)
        epoch_of = {node: index for index, node in self.epochs(run_id).items()}
        rows = []
        for node, props in self.triples.items():
            generator = props.get(PROV + "wasGeneratedBy", [None])[0]
            if generator not in (*epoch_of, run):
                continue
            if CP + "MetricSeries" in props.get(RDF_TYPE, []):  # step-level values: one literal of points
                name = self.one(self.one(node, MLS + "specifiedBy"), RDFS + "label")
                for step, value, at in json.loads(self.one(node, CP + "seriesPoints")):
                    moment = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
                    rows.append(dict(name=name, value=value, epoch=epoch_of.get(generator), step=step, at=moment))
                continue
            if MLS + "ModelEvaluation" not in props.get(RDF_TYPE, []):
                continue
            rows.append(
                dict(
                    name=self.one(self.one(node, MLS + "specifiedBy"), RDFS + "label"),
                    value=self.one(node, MLS + "hasValue"),
                    epoch=epoch_of.get(generator),
                    step=self.one(node, CP + "atStep"),
                    at=self.one(node, PROV + "generatedAtTime"),
                )
            )
        return rows

    def last_in_epoch(self, run_id: str, name: str, epoch: int) -> float:
        logged = [v for v in self.values(run_id) if v["name"] == name and v["epoch"] == epoch]
        return max(logged, key=lambda v: v["at"])["value"]

    def own_settings(self, run_id: str) -> dict[str, Any]:
        run = self.run(run_id)
        return {
            self.one(self.one(s, MLS + "specifiedBy"), RDFS + "label"): self.one(s, MLS + "hasValue")
            for s in self.get(run, PROV + "used")
            # a setting of None has no value, and the query lists values
            if self.get(s, MLS + "specifiedBy") and self.get(s, MLS + "hasValue") and not self.get(s, CP + "settingOf")
        }


@dataclass
class Library:
    store: ProvStore
    path: Path
    ids: dict[str, str]  # run name -> run id
    checkpoints: dict[str, list[Path]]  # run name -> checkpoint files, epoch by epoch
    unfinished_pid: int
    raw: Raw

    def query(self, query: str, /, **params: Any) -> list[dict]:
        return distinct(self.store.query(query, **params).to_dicts())


def _train(path: Path, root: Path, name: str, test: bool = False) -> tuple[str, list[Path]]:
    L.seed_everything(0, verbose=False)
    logger = ProvLogger(store=path, run_name=name)
    checkpoint_dir = root / "checkpoints" / name
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        logger=logger,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=root,
        callbacks=[ModelCheckpoint(dirpath=checkpoint_dir, monitor="val_loss", save_top_k=-1)],
    )
    data = DigitsDataModule(batch_size=16, limit=IMAGES, seed=0)
    trainer.fit(DigitsCNN(**CONFIGS[name]), datamodule=data)
    if test:
        trainer.test(datamodule=data, ckpt_path="best", verbose=False)
    files = [checkpoint_dir / f"epoch={e}-step={(e + 1) * BATCHES}.ckpt" for e in range(EPOCHS)]
    assert all(f.is_file() for f in files)
    return logger.run_id, files


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root = tmp_path_factory.mktemp("library")
    path = root / "provenance"
    ids, checkpoints = {}, {}
    for name in CONFIGS:
        ids[name], checkpoints[name] = _train(path, root, name, test=name == "steplr")
    env = {**os.environ, "PL_GLOBAL_SEED": str(UNFINISHED_SEED)}
    process = subprocess.Popen(
        [sys.executable, "-c", UNFINISHED_RUN, str(path)], cwd=root, env=env, stdout=subprocess.PIPE, text=True
    )
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    ids["unfinished"] = out.strip()
    return Library(ProvStore(path), path, ids, checkpoints, process.pid, Raw(path))


def distinct(rows: list[dict]) -> list[dict]:
    """The rows, after checking that none repeats (shared nodes are described in every run's graph)."""
    seen = [tuple(sorted(row.items(), key=lambda kv: kv[0])) for row in rows]
    assert len(seen) == len(set(map(repr, seen))), "a row repeats"
    return rows




def cli_json(name: str, store: Path, **params: Any) -> list[dict]:
    args = [f"--param={k}={v}" for k, v in params.items()]
    return distinct(json.loads(ok("query", name, "--store", store, "--format", "json", *args)))


def _leaf_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]


def _dropout_index() -> int:
    (index,) = [i for i, (_, m) in enumerate(_leaf_modules(DigitsCNN())) if isinstance(m, torch.nn.Dropout)]
    return index


# -- epoch-metrics ----------------------------------------------------------------------------------
def test_epoch_metrics_gives_every_epoch_with_its_epoch_level_values(library):
    run_id = library.ids["dropout-0.0"]
    rows = library.query("epoch-metrics", run=run_id)
    epochs = library.raw.epochs(run_id)
    assert sorted(epochs) == list(range(EPOCHS))
    expected = set()
    for index, _node in epochs.items():
        logged = [v for v in library.raw.values(run_id) if v["epoch"] == index]
        counts = defaultdict(int)
        for v in logged:
            counts[v["name"]] += 1
        expected |= {(index, v["name"], v["value"]) for v in logged if counts[v["name"]] == 1}
    assert {(r["epoch"], r["metric"], r["value"]) for r in rows} == expected
    assert {"val_loss", "val_acc", "train_loss_epoch"} <= {r["metric"] for r in rows}
    assert "train_loss_step" not in {r["metric"] for r in rows}  # logged 20 times an epoch
    assert [(r["epoch"], r["metric"]) for r in rows] == sorted((r["epoch"], r["metric"]) for r in rows)
    for row in rows:
        node = epochs[row["epoch"]]
        assert row["started"] == library.raw.one(node, PROV + "startedAtTime")
        assert row["ended"] == library.raw.one(node, PROV + "endedAtTime")
        assert row["duration_s"] == pytest.approx((row["ended"] - row["started"]).total_seconds(), abs=1e-3)
        assert row["n_values"] == 1


def test_epoch_metrics_with_more_values_adds_per_step_metrics_with_their_last_value(library):
    run_id = library.ids["dropout-0.5"]
    rows = library.query("epoch-metrics", run=run_id, level="all")
    steps = {r["epoch"]: r for r in rows if r["metric"] == "train_loss_step"}
    assert sorted(steps) == list(range(EPOCHS))
    for epoch, row in steps.items():
        assert row["n_values"] == BATCHES
        assert row["value"] == library.raw.last_in_epoch(run_id, "train_loss_step", epoch)


def test_epoch_metrics_of_a_run_cut_off_in_its_third_epoch(library):
    rows = cli_json("epoch-metrics", library.path, run=library.ids["unfinished"][:8], max_values=2)
    by_epoch = defaultdict(dict)
    for row in rows:
        by_epoch[row["epoch"]][row["metric"]] = row
    assert {e: {m: r["value"] for m, r in metrics.items()} for e, metrics in by_epoch.items()} == {
        0: {"val_loss": 0.5, "val_acc": 0.8},
        1: {"val_loss": 0.8, "val_acc": 0.75},
        2: {"train_loss_step": 0.2},  # the later of its two values
    }
    assert by_epoch[2]["train_loss_step"]["n_values"] == 2
    assert by_epoch[2]["train_loss_step"]["ended"] is None and by_epoch[1]["val_loss"]["ended"] is not None
    # logged once per epoch only: the cut-off epoch keeps a row, without a metric
    rows = library.query("epoch-metrics", run=library.ids["unfinished"], max_values=1)
    (cut,) = [r for r in rows if r["epoch"] == 2]
    assert cut["metric"] is None and cut["started"] is not None and cut["ended"] is None


# -- hyperparameters ------------------------------------------------------------------------------
def test_hyperparameters_are_each_runs_own_settings(library):
    rows = library.query("hyperparameters")
    assert {r["source"] for r in rows} == {"run"}
    for name, run_id in library.ids.items():
        own = {(r["name"], r["value"]) for r in rows if r["run_id"] == run_id}
        assert own == set(library.raw.own_settings(run_id).items()), name
        assert {r["run_name"] for r in rows if r["run_id"] == run_id} == {name}
    dropout = {r["run_name"]: r["value"] for r in rows if r["name"] == "dropout"}
    assert dropout == {"dropout-0.0": 0.0, "dropout-0.5": 0.5, "steplr": DigitsCNN().hparams.dropout, "unfinished": 0.5}
    step_size = {r["run_name"]: r["value"] for r in rows if r["name"] == "step_size"}
    assert step_size == {"steplr": 1}  # a setting of None has no value (mls:hasValue takes literals only)
    assert [(r["run_name"], r["name"]) for r in rows] == sorted((r["run_name"], r["name"]) for r in rows)


def test_hyperparameters_of_one_run_with_its_optimizer_and_scheduler_settings(library):
    rows = library.query("hyperparameters", run=library.ids["steplr"][:6], include="all")
    assert {r["run_name"] for r in rows} == {"steplr"}
    settings = {(r["source"], r["name"]): r["value"] for r in rows}
    assert settings[("run", "lr")] == DEFAULT_LR
    assert settings[("optimizer/0/group/0", "optimizer.lr")] == DEFAULT_LR  # as it started, not as adapted
    assert settings[("optimizer/0/group/0", "optimizer.momentum")] == 0.9
    assert settings[("scheduler/0", "scheduler.step_size")] == 1
    assert settings[("scheduler/0", "scheduler.gamma")] == 0.5
    assert len(settings) == len(rows)  # one value per setting: later learning rates are not listed
    sources = [r["source"] for r in rows]
    assert sources[: sources.count("run")] == ["run"] * sources.count("run")  # the run's own first


# -- compare-runs ---------------------------------------------------------------------------------
def test_compare_runs_that_differ_only_in_dropout(library):
    rows = library.query(
        "compare-runs", run_a=library.ids["dropout-0.0"], run_b=library.ids["dropout-0.5"], include="settings"
    )
    assert [(r["component"], r["setting"], r["value_a"], r["value_b"], r["difference"]) for r in rows] == [
        ("run", "dropout", 0.0, 0.5, "different"),
        (f"layer/{_dropout_index()} (DropoutLayer)", "dropoutRate", 0.0, 0.5, "different"),
    ]
    assert library.query("compare-runs", run_a=library.ids["steplr"], run_b=library.ids["steplr"]) == []


def test_compare_runs_shows_what_the_epochs_used_unless_asked_for_settings_only(library):
    a, b = library.ids["dropout-0.0"], library.ids["dropout-0.5"]
    rows = library.query("compare-runs", run_a=a, run_b=b)  # include="all" by default
    used = {r["setting"]: (r["value_a"], r["value_b"]) for r in rows if r["component"] == "resources"}
    assert {r["difference"] for r in rows if r["component"] == "resources"} == {"different"}
    expected: dict[str, list[float]] = {}
    for run in (a, b):
        epochs = library.query("system-usage", run=run)
        assert len(epochs) == EPOCHS
        for setting, value in (
            ("cpuSeconds", sum(e["cpu_s"] for e in epochs)),
            ("peakRssBytes", max(e["peak_rss_mib"] for e in epochs) * 1048576),
            ("stepSecondsP95", max(e["step_p95_ms"] for e in epochs) / 1000),
            ("stepSecondsMean", sum(e["step_mean_ms"] for e in epochs) / EPOCHS / 1000),
        ):
            expected.setdefault(setting, []).append(value)
    # a figure both runs share (the process's peak RSS, when one process trained both) is no difference
    differing = {setting for setting, (x, y) in expected.items() if x != pytest.approx(y, rel=1e-12)}
    assert {"cpuSeconds", "stepSecondsMean"} <= differing and set(used) == differing
    for setting in differing:
        assert used[setting] == pytest.approx(tuple(expected[setting]))
    settings_only = library.query("compare-runs", run_a=a, run_b=b, include="settings")
    assert settings_only == [r for r in rows if r["component"] != "resources"]
    assert library.query("compare-runs", run_a=a, run_b=a) == []  # a run's own figures are the same


def test_compare_runs_shows_what_only_one_run_has_as_missing_on_the_other_side(library):
    rows = library.query("compare-runs", run_a=library.ids["dropout-0.0"], run_b=library.ids["steplr"])
    found = {(r["component"], r["setting"]): (r["value_a"], r["value_b"], r["difference"]) for r in rows}
    assert found[("run", "dropout")] == (0.0, DigitsCNN().hparams.dropout, "different")
    assert found[("run", "step_size")] == (None, 1, "missing in a")  # None (no value) in run a, 1 in run b
    assert found[("scheduler/0", "pythonClass")] == (None, "torch.optim.lr_scheduler.StepLR", "missing in a")
    assert found[("scheduler/0", "scheduler.step_size")] == (None, 1, "missing in a")
    assert found[("optimizer/0/group/0", "optimizer.initial_lr")] == (None, DEFAULT_LR, "missing in a")
    assert found[("data/test", "sampleCount")] == (None, IMAGES // 10, "missing in a")
    assert ("run", "lr") not in found and ("optimizer/0/group/0", "optimizer.lr") not in found
    assert next(r["component"] for r in rows) == "run"
    a, b = library.ids["steplr"][:8], library.ids["dropout-0.0"][:8]  # the CLI takes the start of an id
    swapped = cli_json("compare-runs", library.path, run_a=a, run_b=b)
    assert {(r["component"], r["setting"]): (r["value_b"], r["value_a"]) for r in swapped} == {
        k: (a, b) for k, (a, b, _) in found.items()
    }
    assert {r["difference"] for r in swapped} == {"different", "missing in b"}


# -- lr-adaptations -------------------------------------------------------------------------------
def test_lr_adaptations_of_the_steplr_run_with_validation_loss_around_each_change(library):
    run_id = library.ids["steplr"]
    rows = library.query("lr-adaptations")  # every run: only steplr changed its rate
    assert [(r["run_id"], r["epoch"], r["step"], r["parameter_group"]) for r in rows] == [
        (run_id, 1, BATCHES, "optimizer/0/group/0"),
        (run_id, 2, 2 * BATCHES, "optimizer/0/group/0"),
    ]
    assert [(r["old_lr"], r["new_lr"]) for r in rows] == [
        (pytest.approx(DEFAULT_LR), pytest.approx(DEFAULT_LR / 2)),
        (pytest.approx(DEFAULT_LR / 2), pytest.approx(DEFAULT_LR / 4)),
    ]
    # an epoch-interval schedule changes the rate once an epoch, at the epoch's first step
    assert [(r["changes"], r["last_step"], r["min_lr"], r["max_lr"]) for r in rows] == [
        (1, r["step"], r["new_lr"], r["new_lr"]) for r in rows
    ]
    for row in rows:
        assert row["metric_before"] == library.raw.last_in_epoch(run_id, "val_loss", row["epoch"] - 1)
        assert row["metric_after"] == library.raw.last_in_epoch(run_id, "val_loss", row["epoch"])


def test_lr_adaptations_for_one_run_and_another_metric(library):
    run_id = library.ids["steplr"]
    rows = library.query("lr-adaptations", run=run_id, metric="val_acc")
    assert [(r["epoch"], r["metric_before"], r["metric_after"]) for r in rows] == [
        (e, library.raw.last_in_epoch(run_id, "val_acc", e - 1), library.raw.last_in_epoch(run_id, "val_acc", e))
        for e in (1, 2)
    ]
    assert library.query("lr-adaptations", run=library.ids["dropout-0.0"]) == []


# -- layers ---------------------------------------------------------------------------------------
def test_layers_of_a_run_in_order_with_their_settings(library):
    rows = library.query("layers", run=library.ids["dropout-0.5"])
    model = DigitsCNN(dropout=0.5)
    leaves = _leaf_modules(model)
    assert [(r["index"], r["name"]) for r in rows] == [(i, n) for i, (n, _) in enumerate(leaves)]
    assert [r["parameters"] for r in rows] == [sum(p.numel() for p in m.parameters()) for _, m in leaves]
    assert [r["kind"] for r in rows] == [
        "ConvolutionLayer", "NormalizationLayer", "ActivationLayer", "PoolingLayer",
        "ConvolutionLayer", "ActivationLayer", "PoolingLayer",
        "FlattenLayer", "DropoutLayer", "LinearLayer",
    ]  # fmt: skip
    convolutions = [m for _, m in leaves if isinstance(m, torch.nn.Conv2d)]
    recorded = [r for r in rows if r["kind"] == "ConvolutionLayer"]
    assert [(r["filters"], r["kernel_size"], r["stride"], r["padding"]) for r in recorded] == [
        (m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]) for m in convolutions
    ]
    assert [r["dropout_rate"] for r in rows if r["kind"] == "DropoutLayer"] == [0.5]
    assert [r["units"] for r in rows if r["kind"] == "LinearLayer"] == [10]
    assert {r["activation"] for r in rows if r["kind"] == "ActivationLayer"} == {"ReLU"}
    assert rows[_dropout_index()]["dropout_rate"] == 0.5
    assert rows[0]["dropout_rate"] is None and rows[0]["activation"] is None


# -- lineage --------------------------------------------------------------------------------------
def _lineage(rows: list[dict]) -> dict[str, list[tuple]]:
    found = defaultdict(list)
    for row in rows:
        found[row["relation"]].append((row["label"], row["value"]))
    return found


def test_lineage_of_a_checkpoint_by_its_path_and_by_its_sha256(library):
    final = library.checkpoints["dropout-0.0"][-1]
    sha = hashlib.sha256(final.read_bytes()).hexdigest()
    by_path = library.query("lineage", checkpoint=str(final.resolve()))
    assert by_path == library.query("lineage", checkpoint=sha)
    found = _lineage(by_path)
    assert found["checkpoint"] == [(str(final.resolve()), sha)]
    assert found["generated by"] == [(f"epoch {EPOCHS - 1}", EPOCHS - 1)]
    earlier = library.checkpoints["dropout-0.0"][:-1]
    assert found["derived from"] == [(str(f.resolve()), e) for e, f in enumerate(earlier)]
    assert found["part of run"] == [("dropout-0.0", library.ids["dropout-0.0"])]
    assert sorted(found["used data"]) == [
        ("train", "torch.utils.data.dataset.TensorDataset"),
        ("validation", "torch.utils.data.dataset.TensorDataset"),
    ]
    settings = dict(found["used setting"])
    assert settings["dropout"] == 0.0 and settings["lr"] == DEFAULT_LR and settings["optimizer.lr"] == DEFAULT_LR
    assert "used adapted setting" not in found and "used scheduler" not in found
    assert found["executed plan"] == [("DigitsCNN", "cnnprov.demo.DigitsCNN")]
    assert found["used architecture"] == [("architecture", "cnnprov.demo.DigitsCNN")]
    assert found["used optimizer"] == [("optimizer", "torch.optim.sgd.SGD")]
    agents = dict(found["associated with"])
    assert agents["torch"] == torch.__version__ and agents["cnnprov"] == cnnprov.__version__
    assert agents[getpass.getuser()] is None  # the person; software agents carry a version
    monitored = dict(found["monitored"])
    assert monitored["val_loss"] == library.raw.last_in_epoch(library.ids["dropout-0.0"], "val_loss", EPOCHS - 1)
    rows = [r for r in by_path if r["relation"] == "part of run"]
    assert rows[0]["node"] == library.raw.run(library.ids["dropout-0.0"])


def test_checkpoints_lists_a_runs_files_in_order_with_their_hashes(library):
    files = library.checkpoints["dropout-0.0"]
    rows = library.query("checkpoints", run=library.ids["dropout-0.0"][:8])
    assert [row["path"] for row in rows] == [str(f.resolve()) for f in files]
    assert [row["epoch"] for row in rows] == list(range(EPOCHS))
    assert [row["sha256"] for row in rows] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert [row["size_bytes"] for row in rows] == [f.stat().st_size for f in files]
    other = library.query("checkpoints", run=library.ids["steplr"])
    assert not {row["path"] for row in rows} & {row["path"] for row in other}


def test_lineage_shows_the_learning_rates_in_force_and_leaves_out_later_test_data(library):
    files = library.checkpoints["steplr"]
    sha = hashlib.sha256(files[1].read_bytes()).hexdigest()
    found = _lineage(cli_json("lineage", library.path, checkpoint=sha))
    assert found["generated by"] == [("epoch 1", 1)]
    assert found["derived from"] == [(str(files[0].resolve()), 0)]
    assert found["used adapted setting"] == [("optimizer.lr from epoch 1", pytest.approx(DEFAULT_LR / 2))]
    assert [role for role, _ in found["used data"]] == ["train", "validation"]  # the test stage came later
    assert found["used scheduler"] == [("scheduler", "torch.optim.lr_scheduler.StepLR")]
    final = _lineage(library.query("lineage", checkpoint=str(files[-1].resolve())))
    adapted = [v for _, v in final["used adapted setting"]]
    assert adapted == [pytest.approx(DEFAULT_LR / 2), pytest.approx(DEFAULT_LR / 4)]
    assert library.query("lineage", checkpoint="0" * 64) == []
    with pytest.raises(QueryError, match="checkpoint"):
        library.query("lineage")


# -- runs-using-dataset ---------------------------------------------------------------------------
def test_runs_using_dataset_by_class_name_or_full_class(library):
    rows = library.query("runs-using-dataset", dataset="TensorDataset")
    expected = {(library.ids[n], "train", IMAGES * 8 // 10) for n in CONFIGS}
    expected |= {(library.ids[n], "validation", IMAGES // 10) for n in CONFIGS}
    expected |= {(library.ids["steplr"], "test", IMAGES // 10)}
    assert {(r["run_id"], r["role"], r["samples"]) for r in rows} == expected
    assert len(rows) == len(expected)
    assert {r["dataset_class"] for r in rows} == {"torch.utils.data.dataset.TensorDataset"}
    assert {(r["batch_size"], r["batches"]) for r in rows if r["role"] == "train"} == {(16, BATCHES)}
    started = [r["started"] for r in rows]
    assert started == sorted(started)
    full = library.query("runs-using-dataset", dataset="torch.utils.data.dataset.TensorDataset")
    assert full == rows
    (shards,) = library.query("runs-using-dataset", dataset="Shards")
    assert (shards["run_id"], shards["role"], shards["samples"], shards["batch_size"], shards["batches"]) == (
        library.ids["unfinished"], "train", 100, 10, 10,
    )  # fmt: skip
    assert library.query("runs-using-dataset", dataset="dataset.TensorDataset") == []


# -- unfinished-runs ------------------------------------------------------------------------------
def test_unfinished_runs_names_the_run_its_process_and_how_far_it_got(library):
    run_id = library.ids["unfinished"]
    rows = library.query("unfinished-runs")
    assert [(r["run_id"], r["metric"], r["value"], r["step"]) for r in rows] == [(run_id, "train_loss_step", 0.2, 21)]
    (row,) = rows
    assert (row["run_name"], row["status"], row["last_epoch"]) == ("unfinished", "running", 2)
    assert (row["host"], row["process_id"]) == (socket.gethostname(), library.unfinished_pid)
    assert row["started"] == library.raw.one(library.raw.run(run_id), PROV + "startedAtTime")
    listed = cli_json("unfinished-runs", library.path)
    assert {"run_id", "host", "process_id"} <= set(listed[0])
    assert (listed[0]["run_id"], listed[0]["process_id"]) == (run_id, library.unfinished_pid)


# -- run-environment ------------------------------------------------------------------------------
def test_run_environment_of_every_run(library):
    rows = {r["run_id"]: r for r in library.query("run-environment")}
    assert set(rows) == set(library.ids.values())
    for name, run_id in library.ids.items():
        row = rows[run_id]
        run = library.raw.run(run_id)
        assert row["run_name"] == name
        assert (row["user"], row["host"]) == (getpass.getuser(), socket.gethostname())
        assert row["cnnprov"] == cnnprov.__version__
        assert row["python"] == platform.python_version()
        if name == "unfinished":  # a plain loop that imported neither: neither is said to have run it
            assert (row["torch"], row["lightning"]) == (None, None)
        else:
            assert row["torch"] == torch.__version__
            assert row["lightning"] == metadata.version("lightning")
        assert row["git_commit"] == library.raw.one(run, CP + "gitCommit")
        if name == "unfinished":
            expected = (library.unfinished_pid, UNFINISHED_SEED, None)  # started outside any git tree
            assert (row["process_id"], row["seed"], row["git_commit"]) == expected
        else:
            assert (row["process_id"], row["seed"]) == (os.getpid(), 0)
    started = [r["started"] for r in library.query("run-environment")]
    assert started == sorted(started)
    (one,) = library.query("run-environment", run=library.ids["steplr"])
    assert one == rows[library.ids["steplr"]]


# -- overfitting ----------------------------------------------------------------------------------
def _final_and_min(library: Library, run_id: str, metric: str = "val_loss") -> dict:
    logged = [v for v in library.raw.values(run_id) if v["name"] == metric and v["epoch"] is not None]
    final = max(logged, key=lambda v: v["at"])
    low = min(v["value"] for v in logged)
    return dict(
        min_value=low,
        final_value=final["value"],
        min_epoch=min(v["epoch"] for v in logged if v["value"] == low),
        final_epoch=final["epoch"],
    )


def test_overfitting_lists_runs_whose_validation_loss_ended_above_its_minimum(library):
    rows = library.query("overfitting")
    expected = {}
    for _name, run_id in library.ids.items():
        values = _final_and_min(library, run_id)
        if values["final_value"] > values["min_value"]:
            expected[run_id] = values
    assert {r["run_id"] for r in rows} == set(expected)
    for row in rows:
        for key, value in expected[row["run_id"]].items():
            assert row[key] == value, key
        assert row["gap"] == pytest.approx(row["final_value"] - row["min_value"])
    assert [r["gap"] for r in rows] == sorted((r["gap"] for r in rows), reverse=True)
    unfinished = next(r for r in rows if r["run_id"] == library.ids["unfinished"])
    assert (unfinished["min_value"], unfinished["final_value"], unfinished["min_epoch"], unfinished["final_epoch"]) == (
        0.5, 0.8, 0, 1,
    )  # fmt: skip


def test_overfitting_above_a_threshold(library):
    gaps = {}
    for run_id in library.ids.values():
        values = _final_and_min(library, run_id)
        gaps[run_id] = values["final_value"] - values["min_value"]
    for threshold in (0.25, 0.35):
        rows = cli_json("overfitting", library.path, threshold=threshold)
        assert {r["run_id"] for r in rows} == {i for i, gap in gaps.items() if gap > threshold}
    assert library.ids["unfinished"] in {r["run_id"] for r in library.query("overfitting", threshold=0.25)}
    assert library.ids["unfinished"] not in {r["run_id"] for r in library.query("overfitting", threshold=0.35)}


# -- hyperparameter-effect ------------------------------------------------------------------------
def _expected_effect(library: Library, name: str, metric: str, best: Any) -> dict:
    by_value = defaultdict(list)
    for run_id in library.ids.values():
        value = library.raw.own_settings(run_id).get(name)
        logged = [v["value"] for v in library.raw.values(run_id) if v["name"] == metric]
        if logged:
            by_value[value].append(best(logged))
    return {v: (len(bests), best(bests), sum(bests) / len(bests)) for v, bests in by_value.items()}


def test_hyperparameter_effect_of_dropout_on_validation_accuracy(library):
    rows = library.query("hyperparameter-effect", name="dropout")
    expected = _expected_effect(library, "dropout", "val_acc", max)
    assert {r["value"]: (r["runs"], r["best"], pytest.approx(r["mean_best"])) for r in rows} == expected
    assert {r["value"]: r["runs"] for r in rows} == {0.0: 1, 0.5: 2, DigitsCNN().hparams.dropout: 1}
    assert [r["best"] for r in rows] == sorted((r["best"] for r in rows), reverse=True)


def test_hyperparameter_effect_with_a_metric_where_lower_is_better(library):
    rows = library.query("hyperparameter-effect", name="dropout", metric="val_loss", order="min")
    expected = _expected_effect(library, "dropout", "val_loss", min)
    assert {r["value"]: (r["runs"], r["best"], pytest.approx(r["mean_best"])) for r in rows} == expected
    assert [r["best"] for r in rows] == sorted(r["best"] for r in rows)
    # an optimizer setting, by the value each run started with: the three trained runs
    (lr,) = library.query("hyperparameter-effect", name="optimizer.lr")
    assert (lr["value"], lr["runs"]) == (DEFAULT_LR, len(CONFIGS))
