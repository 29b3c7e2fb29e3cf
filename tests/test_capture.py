"""What ProvLogger records from real Lightning training, asked through SPARQL as a user would."""

from __future__ import annotations

import csv
import hashlib
import itertools
import platform
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

import cnnprov
from cnnprov import ProvLogger, ProvStore
from cnnprov.demo import DigitsCNN
from cnnprov.rdf.vocab import CNNPROV_NS

from helpers import tiny_data, tiny_trainer

PREFIXES = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX mls: <http://www.w3.org/ns/mls#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
"""


def ask(store: ProvStore, query: str, **params) -> list[dict]:
    return store.sparql(PREFIXES + query, **params).to_dicts()


def train(store_path: Path, root: Path, model: L.LightningModule | None = None, **trainer_options) -> ProvLogger:
    logger = ProvLogger(store=store_path, run_name="tiny")
    trainer = tiny_trainer(root, logger, **trainer_options)
    trainer.fit(model or DigitsCNN(), datamodule=tiny_data())
    return logger


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProvStore, ProvLogger, Path]:
    """One real run: 3 epochs, StepLR every epoch, a checkpoint per epoch, a CSVLogger beside ProvLogger."""
    root = tmp_path_factory.mktemp("run")
    L.seed_everything(7, verbose=False)
    logger = ProvLogger(store=root / "provenance", run_name="steplr")
    csv_logger = CSVLogger(root / "csv", name="run")
    checkpoints = ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, monitor="val_loss", every_n_epochs=1)
    trainer = tiny_trainer(root, [logger, csv_logger], max_epochs=3, callbacks=[checkpoints])
    trainer.fit(
        DigitsCNN(lr=0.1, dropout=0.3, filters=8, kernel_size=3, step_size=1, gamma=0.5), datamodule=tiny_data()
    )
    return ProvStore(root / "provenance"), logger, Path(csv_logger.log_dir)


def test_run_is_recorded_with_status_times_agents_and_environment(recorded):
    store, logger, _ = recorded
    (run,) = ask(
        store,
        """SELECT ?id ?name ?status ?start ?end ?host ?pid ?seed ?plan WHERE {
             ?run a cnnprov:TrainingRun, mls:Run, prov:Activity ; cnnprov:runId ?id ; rdfs:label ?name ;
                  cnnprov:status ?status ; prov:startedAtTime ?start ; prov:endedAtTime ?end ;
                  cnnprov:hostname ?host ; cnnprov:processId ?pid ; cnnprov:randomSeed ?seed ;
                  prov:qualifiedAssociation [ prov:hadPlan [ cnnprov:pythonClass ?plan ] ] }""",
    )
    assert run["id"] == logger.run_id and run["name"] == "steplr"
    assert run["status"] == "success"
    assert run["start"] < run["end"]
    assert run["seed"] == 7
    assert run["plan"] == "cnnprov.demo.DigitsCNN"
    assert run["host"] == platform.node()
    agents = {
        row["name"]: row["version"]
        for row in ask(
            store,
            """SELECT ?name ?version WHERE { ?run a cnnprov:TrainingRun ; prov:wasAssociatedWith ?agent .
                 ?agent a prov:Agent, prov:SoftwareAgent ; rdfs:label ?name ; cnnprov:softwareVersion ?version }""",
        )
    }
    assert agents["cnnprov"] == cnnprov.__version__
    assert agents["lightning"] == L.__version__
    assert agents["torch"] == torch.__version__
    assert agents["python"] == platform.python_version()
    people = ask(store, "SELECT ?p WHERE { ?run prov:wasAssociatedWith ?p . ?p a prov:Person, prov:Agent }")
    assert len(people) == 1


def test_git_commit_of_the_working_directory_is_recorded(tmp_path, store_path, monkeypatch):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    for command in (
        ["git", "init", "-q"],
        ["git", "-c", "user.email=a@b.c", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
    ):
        subprocess.run(command, cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(repo)
    train(store_path, tmp_path, max_epochs=1)
    # the run's, and its attempt's (each attempt records the tree its process ran from)
    rows = ask(ProvStore(store_path), "SELECT ?kind ?commit WHERE { ?node a ?kind ; cnnprov:gitCommit ?commit "
                 "FILTER(?kind IN (cnnprov:TrainingRun, cnnprov:Attempt)) }")
    assert {(row["kind"].rsplit("#")[-1], row["commit"]) for row in rows} == {("TrainingRun", head), ("Attempt", head)}


def test_hyperparameters_are_typed_values(recorded):
    store, _, _ = recorded
    values = {
        row["name"]: row["value"]
        for row in ask(
            store,
            """SELECT ?name ?value WHERE { ?run a cnnprov:TrainingRun ; prov:used ?setting .
                 ?setting a mls:HyperParameterSetting ; mls:specifiedBy [ rdfs:label ?name ] ; mls:hasValue ?value .
                 FILTER NOT EXISTS { ?setting cnnprov:settingOf ?owner } }""",
        )
    }
    # model hyperparameters and the datamodule's, merged by Lightning
    assert values["lr"] == 0.1 and isinstance(values["lr"], float)
    assert values["filters"] == 8 and isinstance(values["filters"], int)
    assert values["step_size"] == 1
    assert values["batch_size"] == 16
    assert values["limit"] == 160


class Odd:
    """A hyperparameter value with no RDF type of its own."""

    def __str__(self) -> str:
        return "odd-thing"


def test_nested_and_unserializable_hyperparameters_never_fail(store_path, tmp_path):
    class Configured(DigitsCNN):
        def __init__(self, optimizer: dict, odd: object, sizes: tuple) -> None:
            super().__init__()
            self.save_hyperparameters()

    model = Configured(optimizer={"name": "sgd", "schedule": {"warmup": 2, "cosine": True}}, odd=Odd(), sizes=(8, 16))
    train(store_path, tmp_path, model=model, max_epochs=1)
    values = {
        row["name"]: row["value"]
        for row in ask(
            ProvStore(store_path),
            "SELECT ?name ?value WHERE { ?s a mls:HyperParameterSetting ;"
            " mls:specifiedBy [ rdfs:label ?name ] ; mls:hasValue ?value }",
        )
    }
    assert values["optimizer.name"] == "sgd"
    assert values["optimizer.schedule.warmup"] == 2
    assert values["optimizer.schedule.cosine"] is True
    assert values["odd"] == "odd-thing"
    assert values["sizes"] == "[8, 16]"


def test_architecture_layers_in_order_with_their_settings(recorded):
    store, _, _ = recorded
    layers = ask(
        store,
        """SELECT ?index ?name ?kind ?filters ?in ?kernel ?stride ?padding ?rate ?activation ?params WHERE {
             ?arch a cnnprov:Architecture ; prov:hadMember ?layer .
             ?layer cnnprov:layerIndex ?index ; cnnprov:layerName ?name ; cnnprov:parameterCount ?params ; a ?kind .
             FILTER(?kind != cnnprov:Layer && ?kind != prov:Entity)
             OPTIONAL { ?layer cnnprov:outChannels ?filters ; cnnprov:inChannels ?in }
             OPTIONAL { ?layer cnnprov:kernelSize ?kernel }
             OPTIONAL { ?layer cnnprov:stride ?stride }
             OPTIONAL { ?layer cnnprov:padding ?padding }
             OPTIONAL { ?layer cnnprov:dropoutRate ?rate }
             OPTIONAL { ?layer cnnprov:activationFunction ?activation }
           } ORDER BY ?index""",
    )
    kinds = [row["kind"].rsplit("#", 1)[-1] for row in layers]
    assert kinds == [
        "ConvolutionLayer", "NormalizationLayer", "ActivationLayer", "PoolingLayer",
        "ConvolutionLayer", "ActivationLayer", "PoolingLayer",
        "FlattenLayer", "DropoutLayer", "LinearLayer",
    ]  # fmt: skip
    convs = [row for row in layers if row["kind"].endswith("ConvolutionLayer")]
    assert [(c["in"], c["filters"], c["kernel"], c["stride"], c["padding"]) for c in convs] == [
        (1, 8, 3, 1, 1),
        (8, 16, 3, 1, 1),
    ]
    assert convs[0]["params"] == 1 * 8 * 3 * 3 + 8
    assert layers[3]["kernel"] == 2  # MaxPool2d(2)
    assert layers[8]["rate"] == pytest.approx(0.3)
    assert layers[2]["activation"] == "ReLU"
    assert [row["name"] for row in layers][:2] == ["features.0", "features.1"]


def test_optimizer_scheduler_and_every_learning_rate_change(recorded):
    store, _, _ = recorded
    settings = {
        row["key"]: row["value"]
        for row in ask(
            store,
            """SELECT ?key ?value WHERE { ?opt a cnnprov:Optimizer ; cnnprov:pythonClass "torch.optim.sgd.SGD" ;
                 prov:hadMember ?group . ?setting cnnprov:settingOf ?group ; mls:specifiedBy [ rdfs:label ?key ] ;
                 mls:hasValue ?value . FILTER NOT EXISTS { ?setting prov:wasDerivedFrom ?earlier } }""",
        )
    }
    assert settings["optimizer.lr"] == 0.1
    assert settings["optimizer.momentum"] == 0.9
    assert settings["optimizer.weight_decay"] == 0
    (scheduler,) = ask(
        store,
        """SELECT ?class ?interval ?step WHERE { ?s a cnnprov:LearningRateScheduler ; cnnprov:pythonClass ?class ;
             cnnprov:schedulerInterval ?interval ; cnnprov:adjusts ?opt .
             ?setting cnnprov:settingOf ?s ; mls:specifiedBy [ rdfs:label "scheduler.step_size" ] ;
             mls:hasValue ?step }""",
    )
    assert scheduler["class"].endswith("StepLR") and scheduler["interval"] == "epoch" and scheduler["step"] == 1
    changes = ask(
        store,
        """SELECT ?epoch ?old ?new ?step ?count WHERE { ?series a cnnprov:LearningRateSeries ;
             prov:wasGeneratedBy [ cnnprov:epochIndex ?epoch ] ; prov:wasDerivedFrom ?before ;
             cnnprov:seriesFirst ?new ; cnnprov:seriesFirstStep ?step ; cnnprov:seriesCount ?count .
             OPTIONAL { ?before mls:hasValue ?setting } OPTIONAL { ?before cnnprov:seriesLast ?last }
             BIND(COALESCE(?setting, ?last) AS ?old) }
           ORDER BY ?epoch""",
    )
    # StepLR(step_size=1, gamma=0.5) over 3 epochs of 4 steps: 0.1 -> 0.05 from step 4 -> 0.025 from step 8
    assert [(c["epoch"], c["old"], c["new"], c["step"], c["count"]) for c in changes] == [
        (1, pytest.approx(0.1), pytest.approx(0.05), 4, 1),
        (2, pytest.approx(0.05), pytest.approx(0.025), 8, 1),
    ]


def test_train_and_validation_data(recorded):
    store, _, _ = recorded
    data = {
        row["role"]: row
        for row in ask(
            store,
            """SELECT ?role ?class ?samples ?batch WHERE { ?run prov:used ?d .
                 ?d a mls:Dataset ; cnnprov:dataRole ?role ;
                 cnnprov:pythonClass ?class ; cnnprov:sampleCount ?samples ; cnnprov:batchSize ?batch }""",
        )
    }
    assert set(data) == {"train", "validation"}
    assert data["train"]["class"] == "torch.utils.data.dataset.TensorDataset"
    assert data["train"]["samples"] == 128 and data["validation"]["samples"] == 16  # 160 images: 80/10/10 %
    assert data["train"]["batch"] == 16


def test_one_epoch_activity_per_epoch_in_order(recorded):
    store, _, _ = recorded
    epochs = ask(
        store,
        """SELECT ?index ?start ?end ?seconds ?previous WHERE { ?e a cnnprov:Epoch, prov:Activity ;
             cnnprov:partOfRun ?run ; cnnprov:epochIndex ?index ; prov:startedAtTime ?start ;
             prov:endedAtTime ?end ; cnnprov:durationSeconds ?seconds .
             OPTIONAL { ?e prov:wasInformedBy [ cnnprov:epochIndex ?previous ] } } ORDER BY ?start""",
    )
    assert [e["index"] for e in epochs] == [0, 1, 2]
    assert [e["previous"] for e in epochs] == [None, 0, 1]
    for epoch, following in itertools.pairwise(epochs):
        assert epoch["end"] <= following["start"]
    for epoch in epochs:
        assert epoch["start"] < epoch["end"]
        assert epoch["seconds"] == pytest.approx((epoch["end"] - epoch["start"]).total_seconds(), abs=1e-3)


def test_exactly_the_metric_values_lightning_logged(recorded):
    """Every value CSVLogger wrote (same Trainer) is recovered exactly, step-level series unpacked."""
    store, logger, csv_dir = recorded
    with open(csv_dir / "metrics.csv", newline="") as handle:
        logged = [
            (name, int(row["step"]), float(value))
            for row in csv.DictReader(handle)
            for name, value in row.items()
            if name not in ("step", "epoch") and value != ""
        ]
    values = store.metric_values(logger.run_id)
    recorded_values = [(row["metric"], row["step"], row["value"]) for row in values]
    assert len(recorded_values) == len(logged) > 0
    assert sorted(recorded_values) == sorted(logged)
    # per-step values are the points of series, the epoch-level ones entities of their own
    levels = {row["metric"]: row["level"] for row in values}
    assert levels["train_loss_step"] == levels["train_acc_step"] == "step"
    assert levels["val_loss"] == levels["val_acc"] == levels["train_loss_epoch"] == "epoch"
    series = ask(
        store,
        """SELECT ?name ?index ?count WHERE { ?s a cnnprov:MetricSeries ; mls:specifiedBy [ rdfs:label ?name ] ;
             prov:wasGeneratedBy [ cnnprov:epochIndex ?index ] ; cnnprov:seriesCount ?count }""",
    )
    steps = sum(1 for name, _, _ in logged if name == "train_loss_step")
    assert sorted((r["name"], r["index"]) for r in series) == [
        (name, epoch) for name in ("train_acc_step", "train_loss_step") for epoch in range(3)
    ]
    assert sum(r["count"] for r in series if r["name"] == "train_loss_step") == steps


def test_metric_values_belong_to_their_epoch(recorded):
    store, _, _ = recorded
    rows = ask(
        store,
        """SELECT ?index ?at (COUNT(?v) AS ?n) WHERE { ?v mls:specifiedBy [ rdfs:label "val_acc" ] ;
             prov:wasGeneratedBy [ cnnprov:epochIndex ?index ] ; cnnprov:atEpoch ?at }
           GROUP BY ?index ?at ORDER BY ?index""",
    )
    assert [(r["index"], r["at"], r["n"]) for r in rows] == [(0, 0, 1), (1, 1, 1), (2, 2, 1)]


def test_every_checkpoint_hash_matches_its_file(recorded):
    store, _, _ = recorded
    checkpoints = ask(
        store,
        """SELECT ?path ?size ?sha ?score ?epoch ?previous WHERE { ?c a cnnprov:Checkpoint, mls:Model ;
             cnnprov:filePath ?path ; cnnprov:fileSizeBytes ?size ; cnnprov:sha256 ?sha ;
             cnnprov:monitoredScore ?score ; prov:wasGeneratedBy [ cnnprov:epochIndex ?epoch ] .
             OPTIONAL { ?c prov:wasDerivedFrom [ cnnprov:atEpoch ?previous ] } } ORDER BY ?epoch""",
    )
    assert [c["epoch"] for c in checkpoints] == [0, 1, 2]
    assert [c["previous"] for c in checkpoints] == [None, 0, 1]
    val_loss = {
        row["epoch"]: row["value"]
        for row in ask(
            store,
            'SELECT ?epoch ?value WHERE { ?v mls:specifiedBy [ rdfs:label "val_loss" ] ;'
            " cnnprov:atEpoch ?epoch ; mls:hasValue ?value }",
        )
    }
    for checkpoint in checkpoints:
        data = Path(checkpoint["path"]).read_bytes()
        assert checkpoint["sha"] == hashlib.sha256(data).hexdigest()
        assert checkpoint["size"] == len(data)
        assert checkpoint["score"] == pytest.approx(val_loss[checkpoint["epoch"]])


def test_exception_in_training_step_fails_the_run_and_keeps_earlier_epochs(store_path, tmp_path):
    class Crashes(DigitsCNN):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 2 and batch_idx == 1:
                raise ValueError("loss exploded")
            return super().training_step(batch, batch_idx)

    logger = ProvLogger(store=store_path)
    with pytest.raises(ValueError, match="loss exploded"):
        tiny_trainer(tmp_path, logger, max_epochs=4).fit(Crashes(), datamodule=tiny_data())
    store = ProvStore(store_path)
    (run,) = ask(
        store,
        "SELECT ?status ?type ?message ?end WHERE { ?r a cnnprov:TrainingRun ; cnnprov:status ?status ; "
        "cnnprov:errorType ?type ; cnnprov:errorMessage ?message ; prov:endedAtTime ?end }",
    )
    assert (run["status"], run["type"], run["message"]) == ("failed", "ValueError", "loss exploded")
    epochs = ask(store, "SELECT ?i WHERE { ?e a cnnprov:Epoch ; cnnprov:epochIndex ?i } ORDER BY ?i")
    assert [e["i"] for e in epochs] == [0, 1, 2]
    validated = ask(
        store, 'SELECT ?at WHERE { ?v mls:specifiedBy [ rdfs:label "val_acc" ] ; cnnprov:atEpoch ?at } ORDER BY ?at'
    )
    assert [v["at"] for v in validated] == [0, 1]


def test_records_of_an_epoch_are_in_the_store_before_the_next_epoch_trains(store_path, tmp_path):
    seen: list[list[int]] = []

    class Peeks(DigitsCNN):
        def on_train_epoch_start(self) -> None:
            # the store is held by this process's run: a read in the process reads through it
            recorder = self.trainer.logger.experiment
            rows = ProvStore(store_path).sparql(
                f"SELECT DISTINCT ?at WHERE {{ GRAPH {recorder.bundle} {{ ?x <{CNNPROV_NS}atEpoch> ?at }} }}"
            )
            seen.append(sorted(str(at) for at in rows.column("at")))

    tiny_trainer(tmp_path, ProvLogger(store=store_path), max_epochs=3).fit(Peeks(), datamodule=tiny_data())
    # Lightning's hook runs after ours: at epoch k's start, every metric of epochs < k is stored.
    assert [[int(v) for v in epoch] for epoch in seen] == [[], [0], [0, 1]]


def test_two_runs_in_one_store_are_both_ranked(sweep_store):
    ranked = sweep_store.query("best-runs").to_dicts()
    assert sorted(r["run_name"] for r in ranked) == ["dropout=0.0", "dropout=0.5"]
    assert ranked[0]["best"] > ranked[1]["best"]  # the runs really differ, so the order means something
    for row in ranked:
        best = ask(
            sweep_store,
            """SELECT ?id (MAX(?v) AS ?best) WHERE { ?r cnnprov:runId ?id . ?e cnnprov:partOfRun ?r .
                 ?m prov:wasGeneratedBy ?e ; mls:specifiedBy [ rdfs:label "val_acc" ] ; mls:hasValue ?v }
               GROUP BY ?id""",
            id=row["run_id"],
        )
        assert row["best"] == best[0]["best"]
        assert f"dropout={row['run_name'].split('=')[1].rstrip('0').rstrip('.') or '0'}" in row["hyperparameters"]


def test_turtle_export_of_a_run_parses_back_to_the_same_triples(recorded):
    import rdflib

    store, logger, _ = recorded
    exported = rdflib.Graph().parse(data=store.export("turtle", run=logger.run_id), format="turtle")
    dataset = store.dataset()
    try:
        (bundle,) = [g for g in dataset.graphs() if str(g.identifier).endswith(logger.run_id)]
        in_store = {(s, p, o) for s, p, o in bundle}
    finally:
        dataset.close()
    assert {_plain(t) for t in exported} == {_plain(t) for t in in_store}
    assert len(in_store) > 500


def _plain(triple: tuple) -> tuple:
    """RDF 1.1 makes "x" and "x"^^xsd:string one literal; rdflib keeps them apart."""
    import rdflib
    from rdflib.namespace import XSD

    return tuple(
        rdflib.Literal(str(t)) if isinstance(t, rdflib.Literal) and t.datatype == XSD.string else t for t in triple
    )


def test_store_opens_as_an_rdflib_dataset_with_one_graph_per_run(sweep_store):
    from rdflib import Namespace

    cp = Namespace("https://w3id.org/cnnprov/ns#")
    with sweep_store as store:  # one open handle shared by the dataset and the query API
        dataset = store.dataset()
        graphs = [g for g in dataset.graphs() if len(g) > 0 and str(g.identifier).startswith("https://")]
        assert len(graphs) == 2
        runs = {str(run_id) for run_id in dataset.objects(None, cp.runId)}
        assert runs == {row["run_id"] for row in store.runs()}
        rows = list(dataset.query("SELECT (COUNT(?e) AS ?n) WHERE { ?e a cnnprov:Epoch }"))
        assert int(rows[0][0]) == 4
        dataset.close()
    assert len(sweep_store.runs()) == 2  # released: the store opens again


def test_an_open_dataset_does_not_keep_other_reads_out(sweep_store):
    dataset = sweep_store.dataset()  # read-only, as every read: it takes no lock
    try:
        assert len(sweep_store.runs()) == 2
        assert len(list(dataset.query("SELECT ?r WHERE { ?r a cnnprov:TrainingRun }"))) == 2
    finally:
        dataset.close()
        del dataset
    assert len(sweep_store.runs()) == 2


def test_save_does_nothing_on_the_hot_path(store_path):
    logger = ProvLogger(store=store_path)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.experiment.flush()  # the run's start and that value stored
    logger.log_metrics({"loss": 0.9}, step=1)
    before = logger.experiment._writer.pending
    for _ in range(100):
        logger.save()
    assert logger.experiment._writer.pending == before == 1
    logger.finalize("success")
    rows = ask(ProvStore(store_path), 'SELECT ?v WHERE { ?m mls:specifiedBy [ rdfs:label "loss" ] ; mls:hasValue ?v }')
    assert sorted(row["v"] for row in rows) == [0.9, 1.0]
