"""`cnnprov validate`: every run cnnprov records is well formed, and a broken record is named and explained.

The shapes are `ontologies/cnnprov-shapes.ttl` (SHACL, run by pySHACL). Good records come from real
training (the session sweep, a run with a learning-rate schedule, a run that crashes); broken ones are
real records with triples removed or altered, validated from Python (`validate_graph`) and from a
store on disk through the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pyoxigraph as ox
import pytest
import rdflib
from rdflib import Literal, Namespace, URIRef
from rdflib.namespace import RDF

from cnnprov import ProvLogger, ProvStore
from cnnprov.analysis.validate import SHAPES_NS, shapes_graph, validate_graph, validate_store
from cnnprov.demo import DigitsCNN, run_sweep
from cnnprov.integrations.optuna import OptunaStudyRecorder

from helpers import cli, tiny_data, tiny_trainer

PROV = Namespace("http://www.w3.org/ns/prov#")
MLS = Namespace("http://www.w3.org/ns/mls#")
CP = Namespace("https://w3id.org/cnnprov/ns#")




@pytest.fixture(scope="module")
def run_export(sweep_store: ProvStore) -> tuple[str, bytes]:
    """The id and Turtle export of the sweep's first run (dropout 0.0: two epochs, two checkpoints)."""
    run_id = sorted(sweep_store.runs().to_dicts(), key=lambda r: r["name"])[0]["run_id"]
    return run_id, sweep_store.export("turtle", run=run_id)


def fresh_graph(run_export: tuple[str, bytes]) -> tuple[rdflib.Graph, URIRef]:
    graph = rdflib.Graph().parse(data=run_export[1], format="turtle")
    (run,) = graph.subjects(RDF.type, CP.TrainingRun)
    return graph, run


def node(run: URIRef, kind: str, name: str) -> URIRef:
    """The run's ``kind`` part named ``name``, as the recorder mints it (``…/epoch-1``)."""
    return URIRef(f"{run}/{kind}-{name}")


# -- good records conform ---------------------------------------------------------------------
def test_every_run_of_the_demo_sweep_conforms(sweep_store):
    seen = []
    report = validate_store(sweep_store, progress=lambda number, total, run: seen.append((number, total)))
    assert report.conforms, report.text()
    assert len(report.runs) == 2 and seen == [(1, 2), (2, 2)]
    assert {run.run_id for run in report.runs} == set(sweep_store.runs().column("run_id"))
    assert all(run.findings == [] and run.triples > 500 for run in report.runs)


def test_the_command_passes_on_the_demo_sweep_with_one_line_per_run(sweep_store):
    result = cli("validate", "--store", sweep_store.path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["[1/2]", "ok"], ["[2/2]", "ok"]]
    assert lines[-2] == "2 runs checked against cnnprov-shapes.ttl: 2 conform."
    assert lines[-1].startswith("PROV-CONSTRAINTS (") and lines[-1].endswith("none violated.")


def test_runs_with_a_schedule_a_checkpoint_per_epoch_and_a_crash_conform(tmp_path, store_path):
    run_sweep(store_path, [{"step_size": 1}], max_epochs=3, limit=400, batch_size=16, progress=None)

    class Crashes(DigitsCNN):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1 and batch_idx == 2:
                raise ValueError("loss exploded")
            return super().training_step(batch, batch_idx)

    with pytest.raises(ValueError, match="loss exploded"):
        tiny_trainer(tmp_path, ProvLogger(store=store_path, run_name="crash"), max_epochs=3).fit(
            Crashes(), datamodule=tiny_data()
        )
    store = ProvStore(store_path)
    series = store.sparql("SELECT (COUNT(?a) AS ?n) WHERE { ?a a <https://w3id.org/cnnprov/ns#LearningRateSeries> }")
    assert series.rows == [(2,)]  # the schedule really changed the rate, so its rules were exercised
    statuses = store.sparql(
        "SELECT ?s WHERE { ?r a <https://w3id.org/cnnprov/ns#TrainingRun> ; <https://w3id.org/cnnprov/ns#status> ?s }"
    )
    assert sorted(statuses.column("s")) == ["failed", "success"]
    report = validate_store(store)
    assert report.conforms, report.text()


# -- broken records are named ------------------------------------------------------------------
def remove_start(graph, run):
    graph.remove((run, PROV.startedAtTime, None))
    return run, "RunHasStart"


def epoch_ends_before_it_starts(graph, run):
    epoch = node(run, "epoch", "1")
    start, end = graph.value(epoch, PROV.startedAtTime), graph.value(epoch, PROV.endedAtTime)
    graph.set((epoch, PROV.startedAtTime, end))
    graph.set((epoch, PROV.endedAtTime, start))
    return epoch, "EpochStartsBeforeItEnds"


def epochs_out_of_order(graph, run):
    first, second = node(run, "epoch", "0"), node(run, "epoch", "1")
    graph.set((first, PROV.startedAtTime, graph.value(second, PROV.startedAtTime)))
    return second, "EpochsStartInOrder"


def epoch_recorded_twice(graph, run):
    graph.set((node(run, "epoch", "0"), CP.epochIndex, Literal(1)))
    return node(run, "epoch", "1"), "EpochIndexIsUnique"


def epoch_informed_by_the_wrong_epoch(graph, run):
    epoch = node(run, "epoch", "1")
    graph.set((epoch, PROV.wasInformedBy, epoch))
    return epoch, "EpochFollowsThePreviousEpoch"


def value_not_numeric(graph, run):
    value = node(run, "value", "3")
    graph.set((value, MLS.hasValue, Literal("0.5")))
    return value, "ValueIsNumeric"


def value_without_measure(graph, run):
    value = node(run, "value", "3")
    graph.remove((value, MLS.specifiedBy, None))
    return value, "ValueHasMeasure"


def value_of_another_run(graph, run):
    value = node(run, "value", "3")
    graph.set((value, PROV.wasGeneratedBy, URIRef("https://w3id.org/cnnprov/id/run/other/epoch/0")))
    return run, "ValuesBelongToTheRun"


def checkpoint_without_hash(graph, run):
    checkpoint = node(run, "checkpoint", "1")
    graph.remove((checkpoint, CP.sha256, None))
    return checkpoint, "CheckpointHasHash"


def checkpoint_hash_not_hex(graph, run):
    checkpoint = node(run, "checkpoint", "2")
    graph.set((checkpoint, CP.sha256, Literal("not a digest")))
    return checkpoint, "CheckpointHasHash"


def no_agents(graph, run):
    graph.remove((run, PROV.wasAssociatedWith, None))
    return run, "RunHasAgents"


def unknown_status(graph, run):
    graph.set((run, CP.status, Literal("done")))
    return run, "RunHasStatus"


def finished_without_end(graph, run):
    graph.remove((run, PROV.endedAtTime, None))
    return run, "RunEndMatchesStatus"


BREAKAGES: list[Callable] = [
    remove_start,
    epoch_ends_before_it_starts,
    epochs_out_of_order,
    epoch_recorded_twice,
    epoch_informed_by_the_wrong_epoch,
    value_not_numeric,
    value_without_measure,
    value_of_another_run,
    checkpoint_without_hash,
    checkpoint_hash_not_hex,
    no_agents,
    unknown_status,
    finished_without_end,
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.__name__ for b in BREAKAGES])
def test_a_broken_graph_fails_naming_the_node_and_the_rule(run_export, breakage):
    graph, run = fresh_graph(run_export)
    assert validate_graph(graph).conforms  # the same graph, unbroken, is fine
    broken_node, rule = breakage(graph, run)
    report = validate_graph(graph)
    assert not report.conforms
    assert (str(broken_node), f"cnnprovsh:{rule}") in {(f.node, f.rule) for f in report.violations}, report.text()
    text = report.text()
    assert text.startswith(f"FAIL run {run_export[0]} 'dropout=0.0'")
    assert f"<{broken_node}> breaks cnnprovsh:{rule}: " in text
    assert (URIRef(SHAPES_NS + rule), None, None) in shapes_graph()  # the rule named is one the shapes define


def test_a_run_without_settings_conforms_with_a_warning(run_export):
    graph, run = fresh_graph(run_export)
    for setting in list(graph.subjects(RDF.type, MLS.HyperParameterSetting)):
        graph.remove((run, PROV.used, setting))
    report = validate_graph(graph)
    assert report.conforms and report.violations == []
    warnings = [(f.node, f.rule, f.severity) for f in report.warnings]
    assert warnings == [(str(run), "cnnprovsh:RunHasSettings", "warning")]
    assert "1 warning" in report.summary() and report.summary().startswith("ok")


def test_a_roleless_qualified_usage_as_earlier_records_wrote_it_conforms_with_a_warning(run_export):
    graph, run = fresh_graph(run_export)
    setting = next(iter(graph.subjects(RDF.type, MLS.HyperParameterSetting)))
    usage = URIRef(f"{run}/usage-0123456789abcdef")  # the twin every prov:used had before
    graph.add((run, PROV.qualifiedUsage, usage))
    graph.add((usage, RDF.type, PROV.Usage))
    graph.add((usage, PROV.entity, setting))
    report = validate_graph(graph)
    assert report.conforms and report.violations == []
    assert [(f.node, f.rule) for f in report.warnings] == [(str(usage), "cnnprovsh:UsageHasRole")]
    # the usages a run records now all have a role: the run as exported draws no warning
    assert validate_graph(fresh_graph(run_export)[0]).warnings == []


def test_a_graph_that_records_no_run_is_reported():
    graph = rdflib.Graph(identifier=URIRef("https://example.org/not-a-run"))
    graph.add((URIRef("https://example.org/x"), RDF.type, PROV.Entity))
    report = validate_graph(graph)
    assert not report.conforms
    assert [(f.node, f.rule) for f in report.violations] == [
        ("https://example.org/not-a-run", "cnnprovsh:GraphRecordsARun")
    ]
    assert report.label() == "graph <https://example.org/not-a-run>"


def test_validate_graph_takes_one_graph_not_a_dataset():
    with pytest.raises(TypeError, match="one run"):
        validate_graph(rdflib.Dataset())


# -- a broken store through the command line ----------------------------------------------------
def write_store(path: Path, graphs: list[rdflib.Graph]) -> None:
    """A fresh pyoxigraph store holding each graph as the named graph of its bundle."""
    store = ox.Store(str(path))
    for graph in graphs:
        (bundle,) = graph.subjects(RDF.type, CP.RunBundle)
        data = graph.serialize(format="nt", encoding="utf-8")
        store.load(data, format=ox.RdfFormat.N_TRIPLES, to_graph=ox.NamedNode(str(bundle)))
    store.flush()
    del store


def test_a_broken_store_fails_the_command_naming_run_node_and_rule(sweep_store, tmp_path):
    good_id, bad_id = sorted(sweep_store.runs().column("run_id"))
    good = rdflib.Graph().parse(data=sweep_store.export("turtle", run=good_id), format="turtle")
    bad = rdflib.Graph().parse(data=sweep_store.export("turtle", run=bad_id), format="turtle")
    (run,) = bad.subjects(RDF.type, CP.TrainingRun)
    checkpoint, rule = checkpoint_without_hash(bad, run)
    epoch, epoch_rule = epoch_ends_before_it_starts(bad, run)
    path = tmp_path / "broken"
    write_store(path, [good, bad])

    result = cli("validate", "--store", path)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert f"ok   run {good_id}" in out and f"FAIL run {bad_id}" in out
    assert f"violation: <{checkpoint}> breaks cnnprovsh:{rule}: a checkpoint has exactly one cnnprov:sha256" in out
    assert f"violation: <{epoch}> breaks cnnprovsh:{epoch_rule}: an epoch starts" in out
    summary = next(line for line in out.splitlines() if line.startswith("2 runs checked"))
    assert summary.startswith("2 runs checked against cnnprov-shapes.ttl: 1 conform, 1 do not")
    assert f"start-precedes-end: <{epoch}> ends at" in out  # the same break, as PROV-CONSTRAINTS say it
    assert out.splitlines()[-1].startswith("PROV-CONSTRAINTS (") and "violations." in out.splitlines()[-1]
    assert [line[:5] for line in out.splitlines() if line.startswith("[")] == ["[1/2]", "[2/2]"]

    only_good = cli("validate", "--store", path, "--run", good_id[:8])
    assert only_good.returncode == 0, only_good.stdout
    assert "1 run checked" in only_good.stdout and bad_id not in only_good.stdout
    quiet = cli("validate", "--store", path, "--quiet")
    assert quiet.returncode == 1 and good_id not in quiet.stdout and bad_id in quiet.stdout


def test_the_command_reports_a_missing_store_as_an_error(tmp_path):
    result = cli("validate", "--store", tmp_path / "nowhere")
    assert result.returncode == 1
    assert result.stderr.startswith("cnnprov: error:") and "nowhere" in result.stderr


def test_the_shapes_ship_with_the_package_and_parse():
    text = resources.files("cnnprov").joinpath("ontologies", "cnnprov-shapes.ttl").read_text(encoding="utf-8")
    graph = rdflib.Graph().parse(data=text, format="turtle")
    shapes = set(graph.subjects(RDF.type, URIRef("http://www.w3.org/ns/shacl#PropertyShape")))
    assert len(shapes) > 50
    for shape in shapes:  # every rule says what a well-formed record holds
        assert graph.value(shape, URIRef("http://www.w3.org/ns/shacl#message")) is not None, shape
        assert str(shape).startswith(SHAPES_NS)


def test_a_store_with_an_optuna_study_conforms_and_reports_the_study(tmp_path, store_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.RandomSampler(seed=1)
    study = optuna.create_study(study_name="digits", direction="maximize", sampler=sampler)
    recorder = OptunaStudyRecorder(study, store=store_path)

    def objective(trial):
        model = DigitsCNN(lr=trial.suggest_float("lr", 0.01, 0.3, log=True))
        trainer = tiny_trainer(tmp_path, recorder.logger(trial), max_epochs=1)
        trainer.fit(model, datamodule=tiny_data())
        return float(trainer.callback_metrics["val_acc"])

    study.optimize(objective, n_trials=2, callbacks=[recorder])
    recorder.finish()
    report = validate_store(store_path)
    assert report.conforms, report.text()
    assert sorted(run.kind for run in report.runs) == ["run", "run", "study"]
    (studied,) = [run for run in report.runs if run.kind == "study"]
    assert studied.label().startswith("study 'digits' <https://w3id.org/cnnprov/id/bundle/study-")
    assert report.summary().startswith("2 runs and 1 study checked against cnnprov-shapes.ttl: 3 conform")
    # the sampler is an agent with its version, so the study has nothing to warn about
    assert studied.findings == []


# -- learning-rate series and the finder ---------------------------------------------------------
@pytest.fixture(scope="module")
def rates_export(tmp_path_factory) -> tuple[str, bytes]:
    """A run whose rate changed at every step (OneCycleLR) after a learning-rate finder."""
    import torch
    from lightning.pytorch.callbacks import LearningRateFinder

    class OneCycle(DigitsCNN):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.5, total_steps=20)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    root = tmp_path_factory.mktemp("rates")
    logger = ProvLogger(store=root / "store", run_name="onecycle")
    finder = LearningRateFinder(num_training_steps=20, early_stop_threshold=None)
    trainer = tiny_trainer(root, logger, max_epochs=2, limit_train_batches=10, callbacks=[finder])
    trainer.fit(OneCycle(), datamodule=tiny_data())
    return logger.run_id, ProvStore(root / "store").export("turtle", run=logger.run_id)


def first_series(graph, run):
    return min(graph.subjects(RDF.type, CP.LearningRateSeries), key=str)


def series_without_points(graph, run):
    series = first_series(graph, run)
    graph.remove((series, CP.seriesPoints, None))
    return series, "SeriesHasPoints"


def series_points_not_the_documented_form(graph, run):
    series = first_series(graph, run)
    graph.set((series, CP.seriesPoints, Literal('{"0": 0.1}', datatype=CP.pointsJSON)))
    return series, "SeriesHasPoints"


def series_steps_reversed(graph, run):
    series = first_series(graph, run)
    graph.set((series, CP.seriesFirstStep, Literal(10**6)))
    return series, "SeriesHasFirstStep"


def series_lowest_above_its_first(graph, run):
    series = first_series(graph, run)
    graph.set((series, CP.seriesMin, Literal(10.0)))
    return series, "SeriesStatisticsAgree"


def series_of_another_run(graph, run):
    series = first_series(graph, run)
    other = URIRef("https://w3id.org/cnnprov/id/run/other/epoch/0")
    graph.set((series, PROV.wasGeneratedBy, other))
    graph.add((other, RDF.type, PROV.Activity))
    return run, "ValuesBelongToTheRun"


def finder_without_trials(graph, run):
    (finder,) = graph.subjects(RDF.type, CP.LearningRateFinder)
    graph.remove((finder, CP.trialCount, None))
    return finder, "FinderHasTrials"


SERIES_BREAKAGES: list[Callable] = [
    series_without_points,
    series_points_not_the_documented_form,
    series_steps_reversed,
    series_lowest_above_its_first,
    series_of_another_run,
    finder_without_trials,
]


def test_a_run_with_learning_rate_series_and_a_finder_conforms(rates_export):
    graph, _ = fresh_graph(rates_export)
    assert len(set(graph.subjects(RDF.type, CP.LearningRateSeries))) == 2  # two epochs, one group
    assert len(set(graph.subjects(RDF.type, CP.Series))) == 2  # the finder's rates and losses
    report = validate_graph(graph)
    assert report.conforms and report.violations == [], report.text()


@pytest.mark.parametrize("breakage", SERIES_BREAKAGES, ids=[b.__name__ for b in SERIES_BREAKAGES])
def test_a_broken_series_or_finder_fails_naming_the_node_and_the_rule(rates_export, breakage):
    graph, run = fresh_graph(rates_export)
    broken_node, rule = breakage(graph, run)
    report = validate_graph(graph)
    assert (str(broken_node), f"cnnprovsh:{rule}") in {(f.node, f.rule) for f in report.violations}, report.text()
