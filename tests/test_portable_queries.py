"""Every bundled query gives the same answer on Oxigraph and on rdflib's own SPARQL engine.

Both engines run the same text, the standard SPARQL 1.1 that ProvStore sends (parameters bound
in VALUES blocks), over the same data: rdflib over an N-Quads export whose default graph is the
union of the run graphs. Rows compare as multisets of Python values (floats to 9 places); the
study queries are compared in tests/test_sweeps.py, over a store with a study.
"""

from __future__ import annotations

import pytest

from cnnprov.analysis.query_library import bundled_queries

from helpers import answers_on_both_engines, as_multiset


def parameter_sets(store) -> list[tuple[str, dict]]:
    runs = [row["run_id"] for row in store.runs()]
    (checkpoint,) = store.sparql(
        "SELECT ?path WHERE { ?c <https://w3id.org/cnnprov/ns#filePath> ?path } ORDER BY ?path LIMIT 1"
    ).rows[0]
    first, second = runs[0], runs[1]
    return [
        ("runs", {}),
        ("epoch-times", {}),
        ("unfinished-runs", {}),
        ("best-runs", {}),
        ("best-runs", {"metric": "val_loss", "order": "min"}),
        ("best-runs", {"metric": "no such metric"}),
        ("overfitting", {}),
        ("overfitting", {"threshold": -1.0}),
        ("overfitting", {"metric": "val_acc", "threshold": -1.0}),
        ("hyperparameters", {}),
        ("hyperparameters", {"include": "all"}),
        ("hyperparameters", {"run": first, "include": "all"}),
        ("layers", {"run": first}),
        ("learning-curves", {}),
        ("learning-curves", {"metric": "train_loss_step"}),
        ("lineage", {"checkpoint": checkpoint}),
        ("checkpoints", {"run": first}),
        ("system-usage", {}),
        ("system-usage", {"run": second}),
        ("metric-lineage", {"run": first, "metric": "val_acc"}),
        ("best-run-preprocessing", {}),
        ("best-run-preprocessing", {"metric": "val_loss", "order": "min"}),
        ("runs-using-dataset", {"dataset": "TensorDataset"}),
        ("epoch-metrics", {"run": first}),
        ("epoch-metrics", {"run": first[:8]}),  # a prefix: ProvStore binds the full id
        ("epoch-metrics", {"run": second, "max_values": 1000}),
        ("hyperparameter-effect", {"name": "dropout"}),
        ("hyperparameter-effect", {"name": "dropout", "metric": "val_loss", "order": "min"}),
        ("run-environment", {}),
        ("run-environment", {"run": second}),
        ("compare-runs", {"run_a": first, "run_b": second}),
        ("compare-runs", {"run_a": first, "run_b": first}),
        ("package-differences", {"run_a": first, "run_b": second}),
        ("lr-adaptations", {}),
        ("lr-adaptations", {"run": first, "metric": "val_acc"}),
        ("study-trials", {}),
        ("best-trial", {}),
    ]


#: Queries whose answer over the sweep is empty by nature: no run changed its rate, all runs ended,
#: no study, identical runs differ in nothing, a metric nobody logged, no run overfitted, runs of one
#: process have the same packages (tests/test_environment.py compares runs whose packages differ).
EMPTY = {
    ("lr-adaptations", 0), ("lr-adaptations", 1), ("unfinished-runs", 0), ("study-trials", 0), ("best-trial", 0),
    ("compare-runs", 1), ("best-runs", 2), ("overfitting", 0),
    ("best-run-preprocessing", 0), ("best-run-preprocessing", 1),  # the digits are not transformed
    ("package-differences", 0),
}


def test_every_bundled_query_answers_alike_on_oxigraph_and_rdflib(sweep_store):
    cases = parameter_sets(sweep_store)
    assert {name for name, _ in cases} == set(bundled_queries())
    seen: dict[str, int] = {}
    compared = []
    for name, params in cases:
        index = seen[name] = seen.get(name, -1) + 1
        oxigraph, other = answers_on_both_engines(sweep_store, name, **params)
        assert as_multiset(oxigraph) == as_multiset(other), (name, params)
        if (name, index) not in EMPTY:
            assert oxigraph, (name, params, "an empty answer compares nothing")
        compared.append((name, len(oxigraph)))
    assert len(compared) == len(cases)


@pytest.mark.parametrize("name", ["best-runs", "learning-curves", "runs", "hyperparameters"])
def test_ordered_answers_come_in_the_same_order(sweep_store, name):
    """Where ORDER BY is a total order of the rows (ties broken by run id), the order matches too."""
    oxigraph, other = answers_on_both_engines(sweep_store, name)
    assert oxigraph == other and oxigraph


def test_lr_adaptations_and_lineage_answer_alike_on_a_store_whose_rates_changed(tmp_path):
    """The sweep's rates never change: here a per-step and a per-epoch schedule fill the series they read."""
    import torch

    from cnnprov import ProvLogger, ProvStore
    from cnnprov.demo import DigitsCNN

    from helpers import tiny_data, tiny_trainer

    class OneCycle(DigitsCNN):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.5, total_steps=12)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    store = tmp_path / "store"
    for name, model in (("onecycle", OneCycle()), ("steplr", DigitsCNN(step_size=1))):
        logger = ProvLogger(store=store, run_name=name)
        trainer = tiny_trainer(tmp_path / name, logger, max_epochs=3, enable_checkpointing=name == "steplr")
        trainer.fit(model, datamodule=tiny_data())
    provenance = ProvStore(store)
    for params in ({}, {"run": logger.run_id, "metric": "val_acc"}):
        oxigraph, other = answers_on_both_engines(provenance, "lr-adaptations", **params)
        assert oxigraph and as_multiset(oxigraph) == as_multiset(other), params
    assert len(oxigraph) == 2  # steplr: epochs 1 and 2
    (checkpoint,) = provenance.sparql(
        """SELECT ?sha WHERE { ?c <https://w3id.org/cnnprov/ns#sha256> ?sha ; <https://w3id.org/cnnprov/ns#atEpoch> ?e }
           ORDER BY DESC(?e) LIMIT 1"""
    ).column("sha")  # the last epoch's: the rates of epochs 1 and 2 led to it
    oxigraph, other = answers_on_both_engines(provenance, "lineage", checkpoint=checkpoint)
    assert as_multiset(oxigraph) == as_multiset(other)
    assert sum(row[1] == "used adapted setting" for row in oxigraph) == 2, oxigraph
