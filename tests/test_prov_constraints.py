"""PROV-CONSTRAINTS hold for every kind of run: zero violations, and each check can fail.

One store, trained for real: a run with a StepLR schedule, a checkpoint every epoch, epoch-level
training metrics and a test stage; the same run resumed from its first checkpoint (a second
attempt); a run that fails in its second epoch; and an Optuna study of two trials. The demo
sweep's store is checked too. Then single quads that break one constraint each are written into
a copy, and the check (and, for a generation outside its activity, the SHACL shapes) must name them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import optuna
import pyoxigraph as ox
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from cnnprov import ProvLogger, ProvStore
from cnnprov.analysis.constraints import check_constraints, constraint_queries
from cnnprov.analysis.validate import validate_store
from cnnprov.demo import DigitsCNN
from cnnprov.integrations.optuna import OptunaStudyRecorder
from cnnprov.rdf.vocab import CNNPROV_NS, MLS_NS, PROV_NS
from cnnprov.storage.local import wait_released

from helpers import tiny_data, tiny_trainer


class FailsInEpochOne(DigitsCNN):
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise RuntimeError("diverged")
        return super().training_step(batch, batch_idx)


def checkpointing(root: Path, logger: ProvLogger, epochs: int) -> L.Trainer:
    every_epoch = ModelCheckpoint(dirpath=root / "ckpt", filename="{epoch}", save_top_k=-1)
    return tiny_trainer(root, logger, max_epochs=epochs, callbacks=[every_epoch])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProvStore:
    root = tmp_path_factory.mktemp("constraints")
    path = root / "provenance"
    scheduled = DigitsCNN(step_size=1, gamma=0.5)
    trainer = checkpointing(root, ProvLogger(store=path, run_name="steplr"), epochs=2)
    trainer.fit(scheduled, datamodule=tiny_data())
    trainer.test(scheduled, datamodule=tiny_data())
    resumed = checkpointing(root / "again", ProvLogger(store=path), epochs=3)
    resumed.fit(DigitsCNN(step_size=1, gamma=0.5), datamodule=tiny_data(), ckpt_path=root / "ckpt" / "epoch=0.ckpt")
    with pytest.raises(RuntimeError, match="diverged"):
        tiny_trainer(root / "failed", ProvLogger(store=path, run_name="failed"), max_epochs=3).fit(
            FailsInEpochOne(), datamodule=tiny_data()
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    recorder = OptunaStudyRecorder(study, store=path)

    def objective(trial: optuna.Trial) -> float:
        trial_trainer = tiny_trainer(root / "trials", recorder.logger(trial), max_epochs=1)
        trial_trainer.fit(DigitsCNN(lr=trial.suggest_float("lr", 0.01, 0.1)), datamodule=tiny_data())
        return float(trial_trainer.callback_metrics["val_acc"])

    study.optimize(objective, n_trials=2, callbacks=[recorder])
    recorder.finish()
    wait_released(path)
    return ProvStore(path)


def count(store: ProvStore, where: str) -> int:
    prefixes = f"PREFIX prov: <{PROV_NS}> PREFIX cnnprov: <{CNNPROV_NS}> PREFIX mls: <{MLS_NS}> "
    return int(store.sparql(prefixes + f"SELECT (COUNT(*) AS ?n) WHERE {{ {where} }}").rows[0][0])


def test_the_store_holds_every_kind_of_record_the_constraints_are_about(store):
    assert count(store, "?c a cnnprov:Checkpoint ; prov:wasGeneratedBy [ a cnnprov:Epoch ]") >= 5
    epoch_level = "?v mls:specifiedBy [ <http://www.w3.org/2000/01/rdf-schema#label> 'train_loss_epoch' ]"
    assert count(store, f"{epoch_level} ; prov:wasGeneratedBy [ a cnnprov:Epoch ]") >= 4
    assert count(store, "?v mls:specifiedBy [ <http://www.w3.org/2000/01/rdf-schema#label> 'test_acc' ]") == 1
    assert count(store, "?a a cnnprov:Attempt ; cnnprov:attemptIndex 2") == 1
    assert count(store, "?s a cnnprov:LearningRateSeries ; prov:wasGeneratedBy [ a cnnprov:Epoch ]") >= 2
    assert count(store, "?r a cnnprov:TrainingRun ; cnnprov:status 'failed'") == 1
    assert count(store, "?r cnnprov:partOfStudy ?s ; prov:wasInformedBy ?s") == 2


def test_every_run_in_the_store_meets_every_constraint(store):
    assert len(constraint_queries()) >= 8
    assert check_constraints(store) == []


def test_the_demo_sweep_meets_every_constraint(sweep_store):
    assert check_constraints(sweep_store) == []


def test_what_an_epoch_logs_and_saves_after_its_end_hook_falls_within_the_epoch(store):
    """Lightning logs epoch-level metrics and ModelCheckpoint saves after on_train_epoch_end."""
    late = count(
        store,
        """?x prov:wasGeneratedBy ?epoch ; prov:generatedAtTime ?at . ?epoch a cnnprov:Epoch ;
           prov:endedAtTime ?end . FILTER (?at > ?end)""",
    )
    assert late == 0


def _quad(subject: str, predicate: str, obj: ox.NamedNode | ox.Literal, graph: ox.NamedNode) -> ox.Quad:
    return ox.Quad(ox.NamedNode(subject), ox.NamedNode(PROV_NS + predicate), obj, graph)


BREAKS = {
    # constraint: what to add to a run's graph (given its first epoch) that breaks it once
    "generation-within-activity": lambda epoch, graph: [
        _quad("urn:x:late", "wasGeneratedBy", epoch, graph),
        _quad("urn:x:late", "generatedAtTime", _at("2999-01-01T00:00:00+00:00"), graph),
    ],
    "start-precedes-end": lambda epoch, graph: [
        _quad("urn:x:backwards", "startedAtTime", _at("2020-01-02T00:00:00+00:00"), graph),
        _quad("urn:x:backwards", "endedAtTime", _at("2020-01-01T00:00:00+00:00"), graph),
    ],
    "unique-generation": lambda epoch, graph: [
        _quad("urn:x:twice", "wasGeneratedBy", epoch, graph),
        _quad("urn:x:twice", "wasGeneratedBy", ox.NamedNode("urn:x:other"), graph),
    ],
    "graph-is-bundle": lambda epoch, graph: [
        ox.Quad(epoch, ox.NamedNode(PROV_NS + "value"), ox.Literal("x"), ox.NamedNode("urn:x:not-a-bundle")),
    ],
}


def _at(text: str) -> ox.Literal:
    return ox.Literal(text, datatype=ox.NamedNode("http://www.w3.org/2001/XMLSchema#dateTime"))


@pytest.mark.parametrize("constraint", sorted(BREAKS))
def test_a_record_that_breaks_a_constraint_is_named(store, tmp_path, constraint):
    copy = tmp_path / "provenance"
    shutil.copytree(store.path, copy)
    writable = ox.Store(str(copy))
    (row,) = writable.query(
        f"SELECT ?epoch ?g WHERE {{ GRAPH ?g {{ ?epoch a <{CNNPROV_NS}Epoch> ; <{CNNPROV_NS}epochIndex> 0 }} }} LIMIT 1"
    )
    writable.extend(BREAKS[constraint](row["epoch"], row["g"]))
    del writable
    found = check_constraints(ProvStore(copy))
    assert {violation.constraint for violation in found} == {constraint}, found
    assert all(violation.node.startswith(("urn:x:", "https://")) and violation.detail for violation in found)


def test_the_shapes_catch_a_generation_outside_its_activity(store, tmp_path):
    copy = tmp_path / "provenance"
    shutil.copytree(store.path, copy)
    writable = ox.Store(str(copy))
    (row,) = writable.query(
        f"SELECT ?value ?g WHERE {{ GRAPH ?g {{ ?value <{PROV_NS}wasGeneratedBy> [ a <{CNNPROV_NS}Epoch> ] ; "
        f"<{MLS_NS}specifiedBy> [ <http://www.w3.org/2000/01/rdf-schema#label> 'val_acc' ] }} }} LIMIT 1"
    )
    generated = ox.NamedNode(PROV_NS + "generatedAtTime")
    for quad in list(writable.quads_for_pattern(row["value"], generated, None, row["g"])):
        writable.remove(quad)
    writable.add(ox.Quad(row["value"], generated, _at("2999-01-01T00:00:00+00:00"), row["g"]))
    del writable
    report = validate_store(ProvStore(copy))
    rules = {finding.rule for run in report.runs for finding in run.findings}
    assert "cnnprovsh:GeneratedWithinItsActivity" in rules
    assert validate_store(store).conforms  # the record as written breaks no rule
