"""Lightning's conventions for loggers, walked for ProvLogger beside CSVLogger.

Lightning's own logger tests (``tests_pytorch/loggers/test_all.py``, ``test_logger.py``) and
its ``Logger`` base class set what a logger must do: pickle with its Trainer and log from the
copy, take ``prefix``, ``version`` and ``save_dir``, give ``trainer.log_dir``, make values
readable on ``save()``, write nothing on ranks other than zero, and leave no thread behind.
Each convention is shown on CSVLogger too, where it applies, so that the test says what a
Lightning user expects rather than what cnnprov happens to do.
"""

from __future__ import annotations

import csv
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from cnnprov import ProvLogger, ProvStore
from cnnprov.demo import DigitsCNN, DigitsDataModule

from helpers import tiny_data, tiny_trainer

PREFIXES = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX mls: <http://www.w3.org/ns/mls#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
"""


def values_of(store_path: Path, metric: str) -> list[float]:
    rows = ProvStore(store_path).sparql(
        PREFIXES
        + "SELECT ?v WHERE { GRAPH ?run { ?x mls:specifiedBy [ rdfs:label ?m ] ; mls:hasValue ?v } } ORDER BY ?v",
        m=metric,
    )
    return [float(v) for v in rows.column("v")]


def runs_of(store_path: Path) -> list[dict]:
    return ProvStore(store_path).runs().to_dicts()


def loggers(tmp_path: Path) -> list[L.pytorch.loggers.Logger]:
    return [ProvLogger(store=tmp_path / "provenance", save_dir=tmp_path), CSVLogger(save_dir=tmp_path)]


@pytest.mark.parametrize("kind", ["prov", "csv"])
def test_a_trainer_pickled_before_fit_gives_a_logger_that_logs(tmp_path, kind):
    logger = loggers(tmp_path)[0 if kind == "prov" else 1]
    trainer = tiny_trainer(tmp_path, logger)
    copy = pickle.loads(pickle.dumps(trainer)).logger
    copy.log_metrics({"acc": 1.0}, step=0)
    copy.finalize("success")
    assert (copy.name, copy.save_dir) == (logger.name, logger.save_dir)
    if kind == "prov":  # CSVLogger picks its version when first asked, so the copy's may differ
        assert copy.version == logger.version
        assert values_of(tmp_path / "provenance", "acc") == [1.0]


def test_a_copy_pickled_after_fit_adds_to_the_same_run(tmp_path):
    store_path = tmp_path / "provenance"
    logger = ProvLogger(store=store_path)
    trainer = tiny_trainer(tmp_path, logger, max_epochs=1)
    copy_before = pickle.loads(pickle.dumps(logger))  # before the run was stored
    trainer.fit(DigitsCNN(), datamodule=tiny_data())
    copy_after = pickle.loads(pickle.dumps(trainer)).logger
    copy_after.log_metrics({"late": 2.0}, step=99)
    copy_after.finalize("success")
    copy_before.log_metrics({"late": 3.0}, step=100)
    copy_before.finalize("success")
    (run,) = runs_of(store_path)  # one run, not three
    assert run["run_id"] == logger.run_id and run["status"] == "success"
    assert values_of(store_path, "late") == [2.0, 3.0]


def test_a_copy_logs_into_the_run_of_its_original_while_that_run_is_open(tmp_path):
    store_path = tmp_path / "provenance"
    logger = ProvLogger(store=store_path)
    logger.log_metrics({"x": 1.0}, step=0)  # the run is open in this process
    copy = pickle.loads(pickle.dumps(logger))
    copy.log_metrics({"x": 2.0}, step=1)
    copy.finalize("success")  # a copy's finalize leaves the run to its original
    logger.log_metrics({"x": 3.0}, step=2)
    logger.finalize("success")
    (run,) = runs_of(store_path)
    assert run["status"] == "success"
    assert values_of(store_path, "x") == [1.0, 2.0, 3.0]


def test_two_prov_loggers_and_a_csv_logger_on_one_trainer_each_record_the_run(tmp_path):
    store_path = tmp_path / "provenance"
    first, second = ProvLogger(store=store_path, run_name="a"), ProvLogger(store=store_path, run_name="b")
    csv_logger = CSVLogger(save_dir=tmp_path)
    trainer = tiny_trainer(tmp_path, [first, second, csv_logger], max_epochs=2)  # type: ignore[arg-type]
    trainer.fit(DigitsCNN(), datamodule=tiny_data())
    runs = runs_of(store_path)
    assert sorted(r["name"] for r in runs) == ["a", "b"] and {r["status"] for r in runs} == {"success"}
    with open(Path(csv_logger.log_dir) / "metrics.csv") as file:
        logged = sorted(float(row["val_loss"]) for row in csv.DictReader(file) if row.get("val_loss"))
    assert len(logged) == 2
    assert values_of(store_path, "val_loss") == sorted(logged * 2)  # each run holds every value once


def test_prefix_is_put_in_front_of_every_metric_as_csvlogger_does(tmp_path):
    store_path = tmp_path / "provenance"
    prov, csv_logger = ProvLogger(store=store_path, prefix="digits"), CSVLogger(save_dir=tmp_path, prefix="digits")
    trainer = tiny_trainer(tmp_path, [prov, csv_logger], max_epochs=1)  # type: ignore[arg-type]
    trainer.fit(DigitsCNN(), datamodule=tiny_data())
    with open(Path(csv_logger.log_dir) / "metrics.csv") as file:
        csv_names = set(next(csv.reader(file))) - {"step", "digits-epoch"}
    stored = ProvStore(store_path).sparql(
        PREFIXES + "SELECT DISTINCT ?m WHERE { ?x mls:specifiedBy [ a mls:EvaluationMeasure ; rdfs:label ?m ] }"
    ).column("m")
    assert set(stored) == csv_names and all(name.startswith("digits-") for name in stored)


def test_trainer_log_dir_is_the_save_dir_and_defaults_to_the_working_directory(tmp_path):
    trainer = L.Trainer(logger=ProvLogger(store=tmp_path / "provenance"), default_root_dir=tmp_path / "elsewhere")
    assert trainer.log_dir == str(tmp_path)  # each test runs in its own tmp_path
    named = ProvLogger(store=tmp_path / "provenance", save_dir=tmp_path / "logs", name=None, version="v1")
    assert L.Trainer(logger=named).log_dir == str(tmp_path / "logs")
    assert named.log_dir == str(tmp_path / "logs" / "v1")  # name=None: no directory called None


def test_lightning_cli_trains_with_prov_logger_named_on_the_command_line(tmp_path):
    from lightning.pytorch.cli import LightningCLI

    store_path = tmp_path / "provenance"
    LightningCLI(
        DigitsCNN,
        DigitsDataModule,
        args=[
            "fit",
            "--trainer.logger=cnnprov.ProvLogger",
            f"--trainer.logger.store={store_path}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--data.limit=64",
        ],
    )
    (run,) = runs_of(store_path)
    assert run["status"] == "success" and run["epochs"] == 1
    assert (tmp_path / "config.yaml").is_file()  # SaveConfigCallback wrote into trainer.log_dir


def test_a_new_trainer_with_the_same_version_resumes_from_last_and_continues_the_run(tmp_path):
    store_path = tmp_path / "provenance"

    def fit(max_epochs: int, ckpt_path: str | None) -> ProvLogger:
        logger = ProvLogger(store=store_path, version="baseline", save_dir=tmp_path)
        trainer = tiny_trainer(tmp_path, logger, max_epochs=max_epochs, callbacks=[ModelCheckpoint(save_last=True)])
        trainer.fit(DigitsCNN(), datamodule=tiny_data(), ckpt_path=ckpt_path)
        assert logger.version == "baseline"
        return logger

    first = fit(2, None)
    assert (tmp_path / "cnnprov_runs" / "baseline" / "checkpoints" / "last.ckpt").is_file()
    second = fit(3, "last")
    assert second.run_id == first.run_id  # the run that wrote last.ckpt, continued
    (run,) = runs_of(store_path)
    assert run["epochs"] == 3
    epochs = ProvStore(store_path).sparql(
        PREFIXES + "SELECT ?i WHERE { ?e a cnnprov:Epoch ; cnnprov:epochIndex ?i } ORDER BY ?i"
    ).column("i")
    assert [int(i) for i in epochs] == [0, 1, 2]


def test_save_makes_logged_values_readable_by_another_process(tmp_path):
    store_path = tmp_path / "provenance"
    logger = ProvLogger(store=store_path)
    logger.log_metrics({"loss": 0.5}, step=0)
    logger.experiment.flush()  # the run's start and the first value stored
    time.sleep(0.1)  # save() hands over once per 50 ms: this one comes after the last hand-over
    logger.log_metrics({"loss": 0.25}, step=1)
    logger.save()
    reader = textwrap.dedent(
        f"""
        import time
        from cnnprov import ProvStore
        query = ("SELECT ?v WHERE {{ ?x <http://www.w3.org/ns/mls#hasValue> ?v ; "
                 "<http://www.w3.org/ns/mls#specifiedBy> [ <http://www.w3.org/2000/01/rdf-schema#label> 'loss' ] }}")
        deadline = time.monotonic() + 10
        while True:
            seen = sorted(float(v) for v in ProvStore({str(store_path)!r}).sparql(query).column("v"))
            if seen == [0.25, 0.5] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        print(seen)
        """
    )
    try:
        result = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == "[0.25, 0.5]", result.stderr
    finally:
        logger.finalize("success")


def test_saving_at_every_step_hands_values_over_at_most_once_per_interval(tmp_path):
    logger = ProvLogger(store=tmp_path / "provenance")
    logger.log_metrics({"loss": 1.0}, step=0)
    writer = logger.experiment._writer
    handed = []
    original = writer.flush
    writer.flush = lambda wait=True: (handed.append(wait), original(wait))  # type: ignore[method-assign]
    for step in range(1, 200):
        logger.log_metrics({"loss": 1.0 / step}, step=step)
        logger.save()
    writer.flush = original  # type: ignore[method-assign]
    # 200 saves in a few ms: one hand-over (and none of them waits), not one write per step
    assert handed.count(False) <= 2 and True not in handed
    logger.finalize("success")
    assert len(values_of(tmp_path / "provenance", "loss")) == 200


def test_hyperparameters_logged_without_a_stage_or_after_fit_are_recorded(tmp_path):
    store_path = tmp_path / "provenance"
    alone = ProvLogger(store=store_path, run_name="alone")
    alone.log_hyperparams({"lr": 0.1})
    alone.finalize("success")  # no stage ran: a run of its own holds them
    logger = ProvLogger(store=store_path, run_name="trained")
    tiny_trainer(tmp_path, logger, max_epochs=1).fit(DigitsCNN(), datamodule=tiny_data())
    logger.log_hyperparams({"noted_after_fit": 7})
    rows = ProvStore(store_path).query("hyperparameters").to_dicts()
    by_run = {(r["run_name"], r["name"]): r["value"] for r in rows}
    assert by_run[("alone", "lr")] == 0.1
    assert by_run[("trained", "noted_after_fit")] == 7
    assert {r["name"]: r["status"] for r in runs_of(store_path)} == {"alone": "success", "trained": "success"}


def test_a_rank_other_than_zero_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = ProvLogger(store=tmp_path / "provenance")
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_graph(torch.nn.Linear(2, 2))
    logger.save()
    logger.finalize("success")
    assert not (tmp_path / "provenance").exists()


@pytest.mark.parametrize(("fails", "status"), [(False, "success"), (True, "failed")])
def test_finalize_records_the_status_lightning_gives(tmp_path, fails, status):
    class Model(DigitsCNN):
        def training_step(self, batch, batch_idx):
            if fails and self.current_epoch == 1:
                raise RuntimeError("diverged")
            return super().training_step(batch, batch_idx)

    store_path = tmp_path / "provenance"
    trainer = tiny_trainer(tmp_path, ProvLogger(store=store_path), max_epochs=2)
    if fails:
        with pytest.raises(RuntimeError, match="diverged"):
            trainer.fit(Model(), datamodule=tiny_data())
    else:
        trainer.fit(Model(), datamodule=tiny_data())
    (run,) = runs_of(store_path)
    assert run["status"] == status


def test_log_graph_of_a_plain_module_records_its_layers(tmp_path):
    store_path = tmp_path / "provenance"
    logger = ProvLogger(store=store_path)
    logger.log_graph(torch.nn.Linear(2, 2))
    logger.finalize("success")
    (run,) = runs_of(store_path)
    layers = ProvStore(store_path).query("layers", run=run["run_id"]).to_dicts()
    assert [(layer["kind"], layer["parameters"]) for layer in layers] == [("LinearLayer", 6)]


def test_no_cnnprov_thread_is_alive_once_fit_has_returned(tmp_path):
    logger = ProvLogger(store=tmp_path / "provenance")  # serving reads, as by default
    tiny_trainer(tmp_path, logger, max_epochs=1).fit(DigitsCNN(), datamodule=tiny_data())
    alive = [thread.name for thread in threading.enumerate() if thread.name.startswith("cnnprov")]
    assert alive == []
    logger.finalize("success")  # Lightning has; a second time changes nothing
    assert runs_of(tmp_path / "provenance")[0]["status"] == "success"


def test_runs_that_differ_only_in_the_trainer_configuration_differ_in_compare_runs(tmp_path):
    store_path = tmp_path / "provenance"
    ids = []
    for options in ({}, {"gradient_clip_val": 0.5, "accumulate_grad_batches": 2, "precision": "bf16-mixed"}):
        logger = ProvLogger(store=store_path)
        tiny_trainer(tmp_path, logger, max_epochs=1, **options).fit(DigitsCNN(), datamodule=tiny_data())
        ids.append(logger.run_id)
    store = ProvStore(store_path)
    differences = {
        (row["component"], row["setting"]): (row["value_a"], row["value_b"])
        for row in store.query("compare-runs", run_a=ids[0], run_b=ids[1]).to_dicts()
    }
    assert differences[("trainer", "trainer.precision")] == ("32-true", "bf16-mixed")
    assert differences[("trainer", "trainer.gradient_clip_val")] == (None, 0.5)
    assert differences[("trainer", "trainer.accumulate_grad_batches")] == (1, 2)
    settings = {
        row["name"]: row["value"]
        for row in store.query("hyperparameters", run=ids[1], include="all").to_dicts()
        if row["source"] == "trainer"
    }
    assert settings["trainer.max_epochs"] == 1 and settings["trainer.deterministic"] is False
    assert settings["trainer.strategy"].endswith("SingleDeviceStrategy") and settings["trainer.devices"] == 1
    assert not any(row["source"] == "trainer" for row in store.query("hyperparameters", run=ids[1]).to_dicts())


FAST_DEV_RUN = """
import sys
sys.path.insert(0, {tests!r})
import lightning as L
from cnnprov import ProvLogger
from cnnprov.demo import DigitsCNN
from helpers import tiny_data
trainer = L.Trainer(logger=ProvLogger(store="store"), fast_dev_run={fast}, max_epochs=1, limit_train_batches=2,
                    limit_val_batches=1, enable_progress_bar=False, enable_checkpointing=False)
trainer.fit(DigitsCNN(), datamodule=tiny_data())
"""


@pytest.mark.parametrize("fast", [True, False])
def test_a_logger_lightning_never_called_says_so_at_exit(tmp_path, fast):
    """fast_dev_run=True replaces every logger by a dummy: the run is not recorded, and cnnprov says so."""
    script = FAST_DEV_RUN.format(tests=str(Path(__file__).parent), fast=fast)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if "recorded nothing" in line]
    if fast:
        assert len(said) == 1 and "fast_dev_run=True" in said[0] and "'store'" in said[0]
        assert not (tmp_path / "store").exists()
    else:
        assert said == [] and (tmp_path / "store").exists()
