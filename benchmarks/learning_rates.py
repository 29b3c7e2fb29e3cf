"""What per-step learning-rate tracking costs: quads a change, and nothing when the rate is constant.

Trains :class:`cnnprov.demo.DigitsCNN` twice into one store, alike but for the schedule: once
at a constant rate, once with ``OneCycleLR`` stepped every batch (a change at every step),
~100 steps an epoch for 3 epochs. The difference in the runs' quads, divided by the changes
torch made, is the cost of a change; the constant run's quads against a run of the same
length with no optimizer-step hook at all would be the cost of watching, which is why the
hot path (one call a step, a comparison a group) is timed on its own.

Usage::

    python benchmarks/learning_rates.py               # ~300 steps a run (a minute)
    python benchmarks/learning_rates.py --epochs 1    # quicker
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from pathlib import Path

import lightning as L
import torch
from pyoxigraph import NamedNode

from cnnprov import ProvLogger, ProvStore
from cnnprov.capture.recorder import RunRecorder
from cnnprov.demo import DigitsCNN, DigitsDataModule


class OneCycle(DigitsCNN):
    """DigitsCNN with a OneCycleLR schedule stepped at every batch."""

    def __init__(self, total_steps: int) -> None:
        super().__init__(lr=0.05)
        self.total_steps = total_steps

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.5, total_steps=self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class Changes(L.Callback):
    """Counts the optimizer steps whose rate differs from the step before (what torch did)."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.changes = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        lr = optimizer.param_groups[0]["lr"]
        self.changes += self.last is not None and lr != self.last
        self.last = lr


def train(store: Path, root: Path, model: L.LightningModule, epochs: int, batches: int) -> tuple[str, int]:
    logger, changes = ProvLogger(store=store), Changes()
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=2,
        log_every_n_steps=50,
        logger=logger,
        callbacks=[changes],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=str(root),
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=12))
    return logger.run_id, changes.changes


def quads_of(store: Path, run_id: str) -> int:
    query = f"""SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH ?g {{ ?g <https://w3id.org/cnnprov/ns#describesRun> ?r .
                  ?r <https://w3id.org/cnnprov/ns#runId> "{run_id}" }} GRAPH ?g {{ ?s ?p ?o }} }}"""
    return int(ProvStore(store).sparql(query).rows[0][0])


def series_quads(store: Path) -> int:
    """Quads that record the rates' changes: those of the series, or (in stores of cnnprov 0.1.0) of
    the adaptation activities and the settings they generated, qualified forms and links to them included."""
    cnnprov, prov = "https://w3id.org/cnnprov/ns#", "http://www.w3.org/ns/prov#"
    rdf_type = NamedNode("http://www.w3.org/1999/02/22-rdf-syntax-ns#type")
    qualifiers = {NamedNode(prov + "qualifiedGeneration"), NamedNode(prov + "qualifiedUsage")}
    quads = set()
    with ProvStore(store).reading() as reader:
        nodes = {
            q.subject
            for kind in ("LearningRateSeries", "LearningRateAdaptation")
            for q in reader.quads_for_pattern(None, rdf_type, NamedNode(cnnprov + kind), None)
        }
        nodes |= {
            q.subject
            for n in list(nodes)
            for q in reader.quads_for_pattern(None, NamedNode(prov + "wasGeneratedBy"), n, None)
        }
        for node in nodes:
            own = list(reader.quads_for_pattern(node, None, None, None))
            quads.update(own)
            quads.update(reader.quads_for_pattern(None, None, node, None))
            for quad in own:
                if quad.predicate in qualifiers:
                    quads.update(reader.quads_for_pattern(quad.object, None, None, None))
    return len(quads)


def hot_path_seconds() -> float:
    """One optimizer step's check of an unchanged rate (one group), through the recorder."""
    recorder = RunRecorder.__new__(RunRecorder)  # only the state the check reads
    from cnnprov.capture.run_state import RunState

    recorder._state = RunState()
    recorder._state.rates_seen[0] = [0.1]
    groups = [{"lr": 0.1, "params": []}]
    number = 200_000
    return timeit.timeit(lambda: recorder.learning_rates_used(0, groups, 7), number=number) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=100, help="optimizer steps an epoch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = root / "store"
        L.seed_everything(0, verbose=False)
        constant, _ = train(store, root / "constant", DigitsCNN(lr=0.05), args.epochs, args.batches)
        onecycle, changes = train(
            store, root / "onecycle", OneCycle(args.epochs * args.batches), args.epochs, args.batches
        )
        q_constant, q_onecycle = quads_of(store, constant), quads_of(store, onecycle)
        q_series = series_quads(store)
    print(f"{args.epochs * args.batches} optimizer steps a run; OneCycleLR changed the rate {changes} times")
    print(f"quads: constant rate {q_constant:,}, OneCycleLR {q_onecycle:,}")
    print(f"quads a change: {(q_onecycle - q_constant) / max(changes, 1):.3f} (the schedule's settings included)")
    print(f"quads of the rate's history: {q_series:,}, {q_series / max(changes, 1):.3f} a change")
    try:
        print(f"an unchanged rate's check: {hot_path_seconds() * 1e9:.0f} ns a step")
    except AttributeError:  # a cnnprov without per-step tracking
        print("an unchanged rate's check: (no per-step tracking in this cnnprov)")


if __name__ == "__main__":
    main()
