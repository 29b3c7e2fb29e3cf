"""An Optuna study recorded with its trials' runs: the best trial, the sampler's choices, pruned trials."""

from __future__ import annotations

import lightning as L
import optuna
import pytest

from cnnprov import ProvStore
from cnnprov.demo import DigitsCNN
from cnnprov.integrations.optuna import OptunaStudyRecorder

from helpers import answers_on_both_engines, tiny_data, tiny_trainer


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prune trial 1 at its first report; let every other trial run."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


class Report(L.Callback):
    def __init__(self, trial) -> None:
        self.trial = trial

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.trial.report(float(trainer.callback_metrics["val_acc"]), step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="digits", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1), pruner=PruneTrialOne()
    )
    recorder = OptunaStudyRecorder(study, store=root / "provenance")

    def objective(trial):
        model = DigitsCNN(
            lr=trial.suggest_float("lr", 0.01, 0.3, log=True), filters=trial.suggest_categorical("filters", [4, 8])
        )
        trainer = tiny_trainer(root, recorder.logger(trial), callbacks=[Report(trial)])
        trainer.fit(model, datamodule=tiny_data())
        return float(trainer.callback_metrics["val_acc"])

    study.optimize(objective, n_trials=4, callbacks=[recorder])
    recorder.finish()
    return study, ProvStore(root / "provenance")


def test_each_trial_run_is_linked_to_the_study_with_its_state_and_the_sampler_as_agent(study):
    optuna_study, store = study
    trials = store.query("study-trials").to_dicts()
    assert [t["trial"] for t in trials] == [0, 1, 2, 3]
    assert [t["state"] for t in trials] == [t.state.name for t in optuna_study.trials]
    assert trials[1]["state"] == "PRUNED"
    assert {t["sampler"] for t in trials} == {"RandomSampler"}
    for row, trial in zip(trials, optuna_study.trials, strict=False):
        assert row["run_id"] == trial.user_attrs["cnnprov_run_id"]
        chosen = dict(pair.split("=") for pair in row["settings"].split(", "))
        assert chosen == {k: str(v) if not isinstance(v, float) else chosen[k] for k, v in trial.params.items()}
        assert float(chosen["lr"]) == pytest.approx(trial.params["lr"])
    # every trial's run is a recorded run of the same store; the pruned one failed with TrialPruned
    runs = {r["run_id"]: r for r in store.runs()}
    assert set(runs) == {t["run_id"] for t in trials}
    (pruned,) = store.sparql(
        "SELECT ?id ?type WHERE { ?r <https://w3id.org/cnnprov/ns#runId> ?id ; "
        "<https://w3id.org/cnnprov/ns#errorType> ?type }"
    ).to_dicts()
    assert pruned == {"id": trials[1]["run_id"], "type": "TrialPruned"}


def test_best_trial_is_the_studys_best(study):
    optuna_study, store = study
    best = store.query("best-trial", study="digits").to_dicts()  # trials that tie for best are all listed
    assert [row["value"] for row in best] == pytest.approx([optuna_study.best_value] * len(best))
    tied = [t for t in optuna_study.trials if t.state.name == "COMPLETE" and t.value == optuna_study.best_value]
    assert sorted(row["trial"] for row in best) == [t.number for t in tied]
    by_trial = {row["trial"]: row for row in best}
    for trial in tied:
        assert by_trial[trial.number]["run_id"] == trial.user_attrs["cnnprov_run_id"]
        assert f"filters={trial.params['filters']}" in by_trial[trial.number]["settings"]
    assert store.query("best-trial", study="no such study").rows == []


def test_the_suggested_settings_are_attributed_to_the_sampler(study):
    _, store = study
    rows = store.sparql(
        """SELECT DISTINCT ?s WHERE { ?s a <http://www.w3.org/ns/mls#HyperParameterSetting> ;
             <http://www.w3.org/ns/prov#wasAttributedTo> [ a <http://www.w3.org/ns/prov#SoftwareAgent> ;
             <https://w3id.org/cnnprov/ns#pythonClass> "optuna.samplers._random.RandomSampler" ] }"""
    ).to_dicts()
    assert len(rows) == 8  # two suggestions in each of four trials


def test_a_study_keeps_one_store_open_for_its_trials_and_its_own_records(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=2))
    recorder = OptunaStudyRecorder(study, store=tmp_path / "provenance")

    def objective(trial):
        trainer = tiny_trainer(tmp_path, recorder.logger(trial), max_epochs=1)
        trainer.fit(DigitsCNN(lr=trial.suggest_float("lr", 0.01, 0.3, log=True)), datamodule=tiny_data())
        return float(trainer.callback_metrics["val_acc"])

    study.optimize(objective, n_trials=2, callbacks=[recorder])
    recorder.finish()
    trials = ProvStore(tmp_path / "provenance").query("study-trials")
    assert len(trials) == 2
    # RocksDB starts a new info log (and keeps the last as LOG.old.*) each time the store opens:
    # the study opened it once, and its trials and records shared it; reads open it read-only, with no log
    assert len(list((tmp_path / "provenance").glob("LOG.old.*"))) == 0


@pytest.mark.parametrize(
    ("name", "params"), [("study-trials", {}), ("study-trials", {"study": "digits"}), ("best-trial", {}),
                         ("best-trial", {"study": "digits"}), ("best-trial", {"study": "no such study"})]
)
def test_the_study_queries_answer_alike_on_oxigraph_and_rdflib(study, name, params):
    _, store = study
    oxigraph, other = answers_on_both_engines(store, name, **params)
    assert oxigraph == other  # in order: both sort by study and trial number, one row per trial
    if params.get("study") != "no such study":
        assert oxigraph and all(row[-1] for row in oxigraph)  # every trial has its settings
