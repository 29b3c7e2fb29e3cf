"""The architecture ProvLogger records from real Lightning training of the model zoo (tests/model_zoo.py).

Each model trains one short epoch into one store on disk; the tests ask the store, as a user would,
and compare what it says with the model itself.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import rdflib
import torch
import torchmetrics
from rdflib.namespace import RDF
from torch import nn
from torch.nn import functional as F

from cnnprov import ProvLogger, ProvStore
from cnnprov.analysis.validate import validate_graph, validate_store

from helpers import answers_on_both_engines, as_multiset, tiny_data, tiny_trainer
from model_zoo import ZOO, FunctionalNet, LazyNet, ResidualNet, ZooModel

CP = rdflib.Namespace("https://w3id.org/cnnprov/ns#")
PREFIXES = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
"""


def train(store_path: Path, root: Path, model: ZooModel, name: str, stage: str = "fit") -> str:
    """Run one stage of ``model`` on the digits into the store; the run's id."""
    logger = ProvLogger(store=store_path, run_name=name)
    try:
        run_stage(root, logger, model, stage)
    finally:
        run_id = logger.run_id
    return run_id


def run_stage(root: Path, logger: ProvLogger, model: ZooModel, stage: str = "fit") -> None:
    trainer = tiny_trainer(root, logger, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    getattr(trainer, stage)(model, datamodule=tiny_data())


class Zoo:
    """Every zoo model, trained; its run ids; the warnings training gave."""

    def __init__(self, root: Path) -> None:
        self.store_path = root / "provenance"
        self.models: dict[str, ZooModel] = {}
        self.runs: dict[str, str] = {}
        self.errors: dict[str, Exception] = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for name, cls in ZOO.items():
                self.models[name] = cls()
                logger = ProvLogger(store=self.store_path, run_name=name)
                try:
                    run_stage(root, logger, self.models[name])
                except Exception as error:  # stored as failed: the test of that model says so
                    self.errors[name] = error
                self.runs[name] = logger.run_id
        self.warnings = [str(w.message) for w in caught if "cnnprov" in str(w.message)]
        self.store = ProvStore(self.store_path)

    def ask(self, name: str, query: str) -> list[dict]:
        """The rows of ``query`` about run ``name``'s architecture ``?arch``."""
        text = PREFIXES + "SELECT * WHERE { ?run cnnprov:runId ?id ; prov:used ?arch . ?arch a cnnprov:Architecture . "
        return self.store.sparql(text + query + " }", id=self.runs[name]).to_dicts()

    def layers(self, name: str) -> list[dict]:
        return self.store.query("layers", run=self.runs[name]).to_dicts()

    def layer(self, name: str, layer_name: str) -> dict:
        (row,) = [row for row in self.layers(name) if row["name"] == layer_name]
        return row


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def status(store: ProvStore, run_id: str) -> str:
    query = PREFIXES + "SELECT ?s WHERE { ?run cnnprov:runId ?id ; cnnprov:status ?s }"
    return store.sparql(query, id=run_id).rows[0][0]


# -- lazy modules -------------------------------------------------------------------------------
def test_a_model_with_lazy_modules_trains_and_its_layers_count_their_materialized_parameters(zoo):
    assert "lazy" not in zoo.errors
    assert status(zoo.store, zoo.runs["lazy"]) == "success"
    model = zoo.models["lazy"]
    rows = zoo.layers("lazy")
    assert [(r["name"], r["kind"], r["parameters"]) for r in rows] == [
        ("features.0", "ConvolutionLayer", 1 * 8 * 3 * 3 + 8),
        ("features.1", "NormalizationLayer", 2 * 8),
        ("features.2", "ActivationLayer", 0),
        ("features.3", "PoolingLayer", 0),
        ("classifier.0", "FlattenLayer", 0),
        ("classifier.1", "LinearLayer", 8 * 4 * 4 * 10 + 10),
    ]
    assert (rows[0]["in_channels"], rows[0]["filters"], rows[5]["in_features"]) == (1, 8, 128)
    assert sum(r["parameters"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert zoo.ask("lazy", "?arch cnnprov:architectureNote ?note") == []


def test_a_lazy_model_in_a_stage_that_trains_nothing_is_recorded_once_its_first_call_made_its_parameters(
    tmp_path, store_path
):
    run_id = train(store_path, tmp_path, LazyNet(), "validate-lazy", stage="validate")
    store = ProvStore(store_path)
    assert status(store, run_id) == "success"
    rows = store.query("layers", run=run_id).to_dicts()
    assert [r["parameters"] for r in rows] == [80, 16, 0, 0, 0, 1290]
    assert {r["order"] for r in rows} == {"registration"}


# -- every parameter once, every kind with its settings ---------------------------------------------
@pytest.mark.parametrize("name", list(ZOO))
def test_every_parameter_of_the_model_is_in_exactly_one_layer(zoo, name):
    model = zoo.models[name]
    rows = zoo.layers(name)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(r["parameters"] for r in rows) == total
    assert sum(r["trainable_parameters"] for r in rows) == trainable
    (architecture,) = zoo.ask(name, "?arch cnnprov:parameterCount ?total ; cnnprov:trainableParameterCount ?trainable")
    assert (architecture["total"], architecture["trainable"]) == (total, trainable)


def test_attention_is_one_layer_with_its_heads_and_size_that_holds_its_projections(zoo):
    attention = zoo.models["transformer"].encoder.layers[0].self_attn
    rows = zoo.layers("transformer")
    assert not any(r["name"].endswith("out_proj") for r in rows)  # its weights are the attention's
    row = zoo.layer("transformer", "encoder.layers.0.self_attn")
    assert (row["kind"], row["heads"], row["embed_dim"], row["dropout_rate"]) == ("AttentionLayer", 2, 16, 0.1)
    assert row["parameters"] == sum(p.numel() for p in attention.parameters()) == 4 * 16 * 16 + 4 * 16
    assert row["has_bias"] is True


def test_embeddings_and_recurrent_layers_keep_their_own_settings(zoo):
    embedding = zoo.layer("recurrent", "embedding")
    assert (embedding["kind"], embedding["num_embeddings"], embedding["embedding_dim"], embedding["padding_index"]) == (
        "EmbeddingLayer", 17, 8, 0,
    )  # fmt: skip
    lstm = zoo.layer("recurrent", "lstm")
    assert lstm["kind"] == "RecurrentLayer"
    assert (lstm["input_size"], lstm["hidden_size"], lstm["num_layers"]) == (8, 12, 2)
    assert (lstm["bidirectional"], lstm["batch_first"], lstm["dropout_rate"]) == (True, True, 0.1)
    assert lstm["has_bias"] is True


def test_convolutions_normalizations_and_activations_keep_their_own_settings(zoo):
    depthwise = zoo.layer("separable", "depthwise")
    assert (depthwise["in_channels"], depthwise["filters"], depthwise["groups"]) == (8, 8, 8)
    dilated = zoo.layer("residual", "block.conv2")
    assert (dilated["dilation"], dilated["padding"], dilated["has_bias"]) == (2, 2, False)
    norm = zoo.layer("separable", "norm")
    assert (norm["kind"], norm["groups"], norm["num_features"], norm["epsilon"]) == ("NormalizationLayer", 4, 16, 1e-5)
    assert zoo.layer("separable", "stem.1")["negative_slope"] == 0.2
    assert zoo.layer("separable", "act")["alpha"] == 0.5
    gelu = zoo.layer("separable", "head.3")
    assert (gelu["activation"], gelu["approximation"]) == ("GELU", "tanh")
    assert zoo.layer("separable", "head.2")["in_features"] == 16


def test_the_parameters_a_container_holds_itself_are_a_layer_of_their_own(zoo):
    rows = {r["name"]: r for r in zoo.layers("containers")}
    model, body = rows["ContainerParamsNet"], rows["body"]
    assert (model["kind"], model["own_parameters"], model["parameters"], model["trainable_parameters"]) == (
        "ContainerParameterLayer", "temperature: scalar", 1, 0,
    )  # fmt: skip
    assert (body["kind"], body["own_parameters"], body["parameters"]) == (
        "ContainerParameterLayer", "scale: 1, shift: 10", 11,
    )  # fmt: skip
    assert rows["body.linear"]["parameters"] == 64 * 10 + 10  # the child's parameters stay the child's
    token = zoo.layer("transformer", "TransformerNet")
    assert (token["kind"], token["own_parameters"], token["parameters"]) == (
        "ContainerParameterLayer", "cls_token: 1x1x16", 16,
    )  # fmt: skip


# -- one traced step: execution order, functional operations ----------------------------------------
def operations(zoo: Zoo, name: str) -> list[tuple]:
    rows = zoo.ask(
        name,
        "?arch cnnprov:hasOperation ?op . ?op cnnprov:operationIndex ?index ; cnnprov:functionName ?function ;"
        " cnnprov:moduleName ?module ; cnnprov:operationArguments ?arguments",
    )
    return [(r["function"], r["module"], r["arguments"]) for r in sorted(rows, key=lambda r: r["index"])]


def test_functional_activations_pooling_and_dropout_are_recorded_in_call_order_with_their_arguments(zoo):
    pool = "padding=0, dilation=1, ceil_mode=False, return_indices=False"  # F.max_pool2d passes its defaults on
    assert operations(zoo, "functional") == [
        ("torch.nn.functional.relu", "FunctionalNet", "inplace=False"),
        ("torch.nn.functional.max_pool2d", "FunctionalNet", f"kernel_size=2, stride=None, {pool}"),
        ("torch.nn.functional.leaky_relu", "FunctionalNet", "negative_slope=0.1, inplace=False"),
        ("torch.nn.functional.max_pool2d", "FunctionalNet", f"kernel_size=2, stride=2, {pool}"),
        ("torch.flatten", "FunctionalNet", "1"),
        ("torch.nn.functional.dropout", "FunctionalNet", "p=0.3, training=True, inplace=False"),
    ]  # once: the first step's forward only, not the second step's or validation's


class TwoViewNet(FunctionalNet):
    """Its training step runs the model on two views of the batch: two forward passes in one step."""

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return F.cross_entropy(self(images), labels) + F.cross_entropy(self(images.flip(-1)), labels)


def test_a_step_with_two_forward_passes_records_the_operations_of_one(tmp_path, store_path):
    run_id = train(store_path, tmp_path, TwoViewNet(), "two-views")
    query = "SELECT ?f WHERE { ?run cnnprov:runId ?id ; prov:used/cnnprov:hasOperation/cnnprov:functionName ?f }"
    rows = ProvStore(store_path).sparql(PREFIXES + query, id=run_id).column("f")
    assert len(rows) == 6 and rows.count("torch.nn.functional.max_pool2d") == 2


class MeasuredNet(FunctionalNet):
    """Its training step updates a torchmetrics metric, a module of the LightningModule."""

    def __init__(self) -> None:
        super().__init__()
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=10)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.log("train_acc", self.train_acc(logits, labels))
        return F.cross_entropy(logits, labels)


def test_what_a_metric_module_computes_is_no_operation_of_the_network(tmp_path, store_path):
    run_id = train(store_path, tmp_path, MeasuredNet(), "measured")
    query = "SELECT ?m WHERE { ?run cnnprov:runId ?id ; prov:used/cnnprov:hasOperation/cnnprov:moduleName ?m }"
    assert ProvStore(store_path).sparql(PREFIXES + query, id=run_id).column("m") == ["MeasuredNet"] * 6


def test_calls_inside_a_built_in_layer_are_the_layer_and_calls_between_layers_are_operations(zoo):
    found = operations(zoo, "transformer")
    assert ("torch.nn.functional.relu", "encoder.layers.0", "inplace=False") in found  # the encoder layer's activation
    assert ("torch.cat", "TransformerNet", "dim=1") in found
    assert not any(module.endswith("self_attn") or module == "embed" for _, module, _ in found)
    assert operations(zoo, "residual") == [("torch.Tensor.add", "block", "")]  # the residual sum
    assert operations(zoo, "separable") == [("torch.Tensor.mul", "se", "")]  # the excitation's gate


def test_layers_are_in_the_order_they_ran_and_the_record_says_so(zoo):
    rows = zoo.layers("residual")
    assert [r["name"] for r in rows] == [
        "stem.0", "stem.1", "stem.2",
        "block.conv1", "block.bn1", "block.relu", "block.conv2", "block.bn2",
        "block.downsample.0", "block.downsample.1",
        "head.0", "head.1", "head.2",
    ]  # fmt: skip  # the head is registered first
    assert [r["index"] for r in rows] == list(range(len(rows)))
    assert {r["order"] for r in rows} == {"execution"}


def test_a_stage_that_trains_no_step_keeps_registration_order_and_says_so(tmp_path, store_path):
    run_id = train(store_path, tmp_path, ResidualNet(), "validate-only", stage="validate")
    rows = ProvStore(store_path).query("layers", run=run_id).to_dicts()
    assert [r["name"] for r in rows][:3] == ["head.0", "head.1", "head.2"]
    assert {r["order"] for r in rows} == {"registration"}


def test_the_trace_is_gone_after_the_first_step(zoo):
    for model in zoo.models.values():
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert torch._C._len_torch_function_stack() == 0
    assert zoo.warnings == []  # every zoo model could be traced: nothing to warn of


class ScriptedNet(ZooModel):
    """A scripted submodule takes no hooks: the step cannot be traced."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_step_that_cannot_be_traced_keeps_registration_order_with_a_note_and_a_warning(tmp_path, store_path):
    with pytest.warns(UserWarning, match="architecture record is incomplete.*could not be traced"):
        run_id = train(store_path, tmp_path, ScriptedNet(), "scripted")
    store = ProvStore(store_path)
    assert status(store, run_id) == "success"
    rows = store.query("layers", run=run_id).to_dicts()
    assert {r["order"] for r in rows} == {"registration"}
    assert sum(r["parameters"] for r in rows) == 64 * 10 + 10
    (note,) = store.sparql(
        PREFIXES + "SELECT ?note WHERE { ?run cnnprov:runId ?id ; prov:used [ cnnprov:architectureNote ?note ] }",
        id=run_id,
    ).column("note")
    assert "could not be traced" in note and "registration order" in note


class FailingNet(FunctionalNet):
    def training_step(self, batch, batch_idx):
        self(batch[0])
        raise RuntimeError("the first step fails")


def test_a_first_step_that_fails_still_records_the_architecture_and_leaves_no_trace(tmp_path, store_path):
    model = FailingNet()
    with pytest.raises(RuntimeError, match="the first step fails"), pytest.warns(UserWarning, match="did not complete"):
        train(store_path, tmp_path, model, "failing")
    store = ProvStore(store_path)
    (run_id,) = store.runs().column("run_id")
    assert status(store, run_id) == "failed"
    rows = store.query("layers", run=run_id).to_dicts()
    assert [r["name"] for r in rows] == ["conv1", "conv2", "fc"] and {r["order"] for r in rows} == {"registration"}
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert torch._C._len_torch_function_stack() == 0


# -- reading it back ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "layer", "settings"),
    [
        ("transformer", "encoder.layers.0.self_attn", {"heads": 2, "embed_dim": 16}),
        ("recurrent", "lstm", {"input_size": 8, "hidden_size": 12, "num_layers": 2, "bidirectional": True}),
        ("recurrent", "embedding", {"num_embeddings": 17, "embedding_dim": 8, "padding_index": 0}),
        ("separable", "depthwise", {"in_channels": 8, "groups": 8, "dilation": 1}),
        ("residual", "head.2", {"in_features": 16, "units": 10}),
        ("containers", "body", {"own_parameters": "scale: 1, shift: 10"}),
    ],
)
def test_the_layers_query_shows_each_kinds_settings_alike_on_another_sparql_engine(zoo, name, layer, settings):
    columns = ["run", *zoo.layers(name)[0]]  # the query projects its parameter, which query() leaves out
    oxigraph, rdflib_rows = answers_on_both_engines(zoo.store, "layers", run=zoo.runs[name])
    assert as_multiset(oxigraph) == as_multiset(rdflib_rows)
    (row,) = [dict(zip(columns, values, strict=True)) for values in oxigraph if layer in values]
    assert {key: row[key] for key in settings} == settings
    assert row["order"] == "execution"


def test_every_zoo_run_conforms_to_the_shapes_which_describe_the_new_records(zoo):
    report = validate_store(zoo.store)
    assert report.conforms, report.text()
    assert len(report.runs) == len(ZOO)
    export = zoo.store.export("turtle", run=zoo.runs["functional"])
    graph = rdflib.Graph().parse(data=export, format="turtle")
    operation = next(graph.subjects(RDF.type, CP.FunctionalOperation))
    graph.remove((operation, CP.functionName, None))
    graph.add((next(graph.subjects(RDF.type, CP.Architecture)), CP.layerOrder, rdflib.Literal("alphabetical")))
    broken = validate_graph(graph)
    assert {f.rule for f in broken.violations} == {"cnnprovsh:OperationHasFunction", "cnnprovsh:ArchitectureOrder"}
