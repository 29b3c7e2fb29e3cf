"""The learning rate recorded is the rate torch used at every optimizer step, however it was set.

Each case trains for real into an on-disk store; a probe hooks torch's own ``Optimizer.step``
(a post-step hook: the rates the update just used) and the record, unpacked by
``ProvStore.learning_rates``, must give the same rate for every step of every group.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateFinder, ModelCheckpoint
from lightning.pytorch.tuner import Tuner

from cnnprov import ProvLogger, ProvStore
from cnnprov.analysis.learning_rates import rate_at
from cnnprov.demo import DigitsCNN
from cnnprov.rdf.points import unpack_points
from cnnprov.rdf.vocab import PREFIXES as VOCABULARIES

from helpers import tiny_data, tiny_trainer

SERIES = "https://w3id.org/cnnprov/ns#LearningRateSeries"
PREFIXES = "".join(f"PREFIX {prefix}: <{iri}>\n" for prefix, iri in VOCABULARIES.items())


class RateProbe(L.Callback):
    """What torch used: each optimizer's group rates, read by a hook on torch's own step."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, list[float]]] = []  # (optimizer, global step, rate of each group)
        self._handles: list = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for index, optimizer in enumerate(trainer.optimizers):

            def used(opt, args, kwargs, index=index) -> None:
                self.steps.append((index, trainer.global_step, [float(g["lr"]) for g in opt.param_groups]))

            self._handles.append(optimizer.register_step_post_hook(used))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def assert_recorded_as_used(store: Path, run_id: str, probe: RateProbe) -> None:
    table = ProvStore(store).learning_rates(run_id)
    assert probe.steps, "the probe saw no optimizer step"
    wrong = [
        (optimizer, step, group, used, rate_at(table, step, optimizer, group))
        for optimizer, step, rates in probe.steps
        for group, used in enumerate(rates)
        if rate_at(table, step, optimizer, group) != used
    ]
    assert not wrong, f"(optimizer, step, group, used, recorded): {wrong[:5]} of {len(wrong)}"


def distinct_rates(probe: RateProbe) -> int:
    return len({tuple(rates) for _, _, rates in probe.steps})


def fit(
    tmp_path: Path, model: L.LightningModule, *, store: Path | None = None, **trainer_options
) -> tuple[RateProbe, str]:
    """Train ``model`` 3 epochs of 4 batches with a probe; the probe and the recorded run's id."""
    probe = RateProbe()
    logger = ProvLogger(store=store or tmp_path / "store")
    options = dict(max_epochs=3, enable_checkpointing=False, callbacks=[probe])
    options.update(trainer_options)
    tiny_trainer(tmp_path, logger, **options).fit(model, datamodule=tiny_data())
    return probe, logger.run_id


# -- the ways a rate changes ----------------------------------------------------------------------
class Scheduled(DigitsCNN):
    """A torch scheduler Lightning steps, at the interval and frequency given."""

    def __init__(self, make, interval: str = "step", frequency: int = 1, groups: int = 1) -> None:
        super().__init__(lr=0.1)
        self.make, self.interval, self.frequency, self.groups = make, interval, frequency, groups

    def configure_optimizers(self):
        params = list(self.parameters())
        split = [params[: len(params) // 2], params[len(params) // 2 :]] if self.groups == 2 else [params]
        optimizer = torch.optim.SGD([{"params": p, "lr": 0.1 / (i + 1)} for i, p in enumerate(split)], lr=0.1)
        scheduler = {"scheduler": self.make(optimizer), "interval": self.interval, "frequency": self.frequency}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


SCHEDULES = {
    "onecycle-per-step": lambda: Scheduled(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.5, total_steps=40)),
    "steplr-per-epoch": lambda: Scheduled(lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.5), "epoch"),
    "cosine-every-second-step-two-groups": lambda: Scheduled(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 6), "step", frequency=2, groups=2
    ),
}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_scheduler_of_any_interval_is_recorded_at_every_step(tmp_path, schedule):
    probe, run_id = fit(tmp_path, SCHEDULES[schedule]())
    assert distinct_rates(probe) > 1
    assert_recorded_as_used(tmp_path / "store", run_id, probe)


class WarmUpInOptimizerStep(DigitsCNN):
    """Lightning's documented warm-up: the rate is set in an ``optimizer_step`` override."""

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        optimizer.step(closure=optimizer_closure)
        scale = min(1.0, float(self.trainer.global_step + 1) / 5)
        for group in optimizer.param_groups:
            group["lr"] = scale * self.hparams["lr"]


def test_a_warm_up_in_an_optimizer_step_override_is_recorded_at_every_step(tmp_path):
    probe, run_id = fit(tmp_path, WarmUpInOptimizerStep(lr=0.1))
    assert distinct_rates(probe) >= 5
    assert_recorded_as_used(tmp_path / "store", run_id, probe)


class RateSetInTrainingStep(DigitsCNN):
    """A manual schedule: ``training_step`` sets the rate of the step it is part of."""

    def training_step(self, batch, batch_idx):
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = 0.1 / (1 + self.trainer.global_step // 2)
        return super().training_step(batch, batch_idx)


def test_a_rate_set_in_training_step_is_recorded_at_every_step(tmp_path):
    probe, run_id = fit(tmp_path, RateSetInTrainingStep(lr=0.1))
    assert distinct_rates(probe) >= 6
    assert_recorded_as_used(tmp_path / "store", run_id, probe)


class ManualGan(DigitsCNN):
    """Manual optimization with two optimizers, each with a scheduler stepped every batch."""

    def __init__(self) -> None:
        super().__init__(lr=0.1)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        images, labels = batch
        for optimizer, scheduler in zip(self.optimizers(), self.lr_schedulers(), strict=True):
            loss = torch.nn.functional.cross_entropy(self(images), labels)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            scheduler.step()
        self.log("train_loss", loss)

    def configure_optimizers(self):
        first = torch.optim.SGD(self.features.parameters(), lr=0.1)
        second = torch.optim.Adam(self.classifier.parameters(), lr=0.01)
        return [first, second], [
            torch.optim.lr_scheduler.ExponentialLR(first, 0.9),
            torch.optim.lr_scheduler.StepLR(second, 3, 0.5),
        ]


def test_manual_optimization_with_two_optimizers_is_recorded_at_every_step(tmp_path):
    probe, run_id = fit(tmp_path, ManualGan())
    assert {optimizer for optimizer, _, _ in probe.steps} == {0, 1}
    assert distinct_rates(probe) >= 8
    assert_recorded_as_used(tmp_path / "store", run_id, probe)


class HalveEveryThirdBatch(L.Callback):
    """A user's callback that sets the rate."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step and trainer.global_step % 3 == 0:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] /= 2


def test_a_rate_a_callback_sets_is_recorded_at_every_step(tmp_path):
    probe = RateProbe()
    logger = ProvLogger(store=tmp_path / "store")
    trainer = tiny_trainer(
        tmp_path, logger, max_epochs=3, enable_checkpointing=False, callbacks=[HalveEveryThirdBatch(), probe]
    )
    trainer.fit(DigitsCNN(lr=0.1), datamodule=tiny_data())
    assert distinct_rates(probe) >= 4
    assert_recorded_as_used(tmp_path / "store", logger.run_id, probe)


# -- resuming --------------------------------------------------------------------------------------
def steplr() -> DigitsCNN:
    return DigitsCNN(lr=0.1, step_size=1, gamma=0.5)


def test_resuming_from_a_checkpoint_the_store_did_not_write_records_the_restored_rate(tmp_path):
    # trained without cnnprov: the checkpoint holds a rate the fresh module's optimizer does not have
    first = tiny_trainer(tmp_path / "plain", False, max_epochs=2)  # type: ignore[arg-type]
    first.fit(steplr(), datamodule=tiny_data())
    checkpoint = tmp_path / "plain.ckpt"
    first.save_checkpoint(checkpoint)
    probe = RateProbe()
    logger = ProvLogger(store=tmp_path / "store")
    tiny_trainer(tmp_path, logger, max_epochs=4, enable_checkpointing=False, callbacks=[probe]).fit(
        steplr(), datamodule=tiny_data(), ckpt_path=str(checkpoint)
    )
    assert probe.steps[0][2] != [0.1]  # the restored rate, not the one configure_optimizers gave
    assert_recorded_as_used(tmp_path / "store", logger.run_id, probe)
    table = ProvStore(tmp_path / "store").learning_rates(logger.run_id)
    assert table.rows[0][4] == probe.steps[0][2][0]  # the run started from the restored rate


def test_resuming_from_a_checkpoint_the_store_wrote_continues_the_record(tmp_path):
    store = tmp_path / "store"
    first_probe = RateProbe()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = ProvLogger(store=store)
    tiny_trainer(tmp_path, first, max_epochs=2, callbacks=[saver, first_probe]).fit(steplr(), datamodule=tiny_data())
    probe = RateProbe()
    second = ProvLogger(store=store)
    tiny_trainer(tmp_path, second, max_epochs=4, callbacks=[probe]).fit(
        steplr(), datamodule=tiny_data(), ckpt_path=saver.last_model_path
    )
    assert second.run_id == first.run_id
    probe.steps[:0] = first_probe.steps
    assert distinct_rates(probe) == 4
    assert_recorded_as_used(store, second.run_id, probe)


# -- the learning-rate finder ------------------------------------------------------------------------
def test_after_the_learning_rate_finder_the_run_and_every_step_have_the_rate_used(tmp_path):
    probe = RateProbe()
    logger = ProvLogger(store=tmp_path / "store")
    trainer = tiny_trainer(
        tmp_path, logger, max_epochs=2, limit_train_batches=10, enable_checkpointing=False, callbacks=[probe]
    )
    model = DigitsCNN(lr=0.05)
    tuner = Tuner(trainer)
    finder = tuner.lr_find(model, datamodule=tiny_data(), num_training=20, early_stop_threshold=None)
    trainer.fit(model, datamodule=tiny_data())
    suggested = finder.suggestion()
    assert probe.steps[0][2] == [suggested] != [0.05]
    assert_recorded_as_used(tmp_path / "store", logger.run_id, probe)
    store = ProvStore(tmp_path / "store")
    (row,) = [r for r in store.query("hyperparameters", run=logger.run_id) if r["name"] == "lr"]
    assert row["value"] == suggested  # the run is filed under the rate it trained with
    (best,) = store.query("best-runs", metric="val_acc")
    assert f"lr={suggested!r}" in best["hyperparameters"].split(", ")
    (effect,) = store.query("hyperparameter-effect", name="lr")
    assert effect["value"] == suggested


def test_the_learning_rate_finder_callback_is_recorded_with_its_trials_and_the_setting_it_generated(tmp_path):
    probe = RateProbe()
    finder = LearningRateFinder(num_training_steps=20, early_stop_threshold=None)
    logger = ProvLogger(store=tmp_path / "store")
    trainer = tiny_trainer(
        tmp_path, logger, max_epochs=2, limit_train_batches=10, enable_checkpointing=False, callbacks=[finder, probe]
    )
    trainer.fit(DigitsCNN(lr=0.05), datamodule=tiny_data())
    suggested = finder.optimal_lr.suggestion()
    assert suggested is not None and probe.steps[0][2] == [suggested]
    assert_recorded_as_used(tmp_path / "store", logger.run_id, probe)
    store = ProvStore(tmp_path / "store")
    (found,) = store.sparql(
        PREFIXES
        + """SELECT ?suggestion ?trials ?rates ?value WHERE { ?finder a cnnprov:LearningRateFinder ;
             cnnprov:suggestedLearningRate ?suggestion ; cnnprov:trialCount ?trials .
             ?tried prov:wasGeneratedBy ?finder ; rdfs:label "lr" ; cnnprov:seriesPoints ?rates .
             ?setting prov:wasGeneratedBy ?finder ; mls:hasValue ?value }"""
    ).to_dicts()
    results = finder.optimal_lr.results
    assert (found["suggestion"], found["value"], found["trials"]) == (suggested, suggested, len(results["lr"]))
    assert [point.value for point in unpack_points(found["rates"])] == results["lr"]


# -- cost -------------------------------------------------------------------------------------------
def test_a_constant_rate_writes_no_series_and_a_rate_changing_every_step_one_an_epoch(tmp_path):
    _, constant = fit(tmp_path / "constant", DigitsCNN(lr=0.1), store=tmp_path / "store")
    _, onecycle = fit(tmp_path / "onecycle", SCHEDULES["onecycle-per-step"](), store=tmp_path / "store")
    store = ProvStore(tmp_path / "store")
    counts = dict(
        store.sparql(
            f"""SELECT ?id (COUNT(?series) AS ?n) WHERE {{ ?run a <https://w3id.org/cnnprov/ns#TrainingRun> ;
                  <https://w3id.org/cnnprov/ns#runId> ?id .
                  OPTIONAL {{ ?series a <{SERIES}> ; <http://www.w3.org/ns/prov#wasGeneratedBy> ?epoch .
                             ?epoch <https://w3id.org/cnnprov/ns#partOfRun> ?run }} }} GROUP BY ?id"""
        ).rows
    )
    assert counts[constant] == 0
    assert counts[onecycle] == 3  # three epochs, one group, a change at every step


# -- the series format, and loops without Lightning ------------------------------------------------
def test_a_series_literal_reads_back_every_point_exactly_nan_and_infinities_included():
    from cnnprov.capture.series import PointSeries, points_literal

    values = [0.1, 1 / 3, 1e-300, float("inf"), float("-inf"), 0.1 + 0.2]
    literal = points_literal(PointSeries(list(range(0, 12, 2)), values))
    assert literal.datatype.value == "https://w3id.org/cnnprov/ns#pointsJSON" and " " not in literal.value
    assert [(p.step, p.value) for p in unpack_points(literal)] == list(zip(range(0, 12, 2), values, strict=True))
    (nan,) = unpack_points(points_literal(PointSeries([3], [float("nan")])))
    assert nan.step == 3 and nan.value != nan.value
    timed = PointSeries(times=[])
    timed.add(5, 0.5, 1700000000.25)
    assert unpack_points(points_literal(timed)) == [(5, 0.5, 1700000000.25)]


@pytest.mark.parametrize("text", ['{"0": 0.1}', "[[0.5, 0.1]]", "[[0]]", "not json", '[[0, "fast"]]'])
def test_a_malformed_series_literal_is_an_error_that_says_so(text):
    from cnnprov.rdf.points import MalformedSeriesError

    with pytest.raises(MalformedSeriesError, match="not a cnnprov:pointsJSON literal"):
        unpack_points(text)


def test_a_plain_loop_records_the_rates_of_its_steps_through_the_recorder(tmp_path):
    from cnnprov.capture.recorder import RunRecorder

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}], lr=0.1)
    recorder = RunRecorder(tmp_path / "store")
    recorder.start()
    recorder.log_optimizer(0, optimizer)
    used = []
    for epoch in range(2):
        recorder.epoch_started(epoch)
        for step in range(epoch * 5, epoch * 5 + 5):
            optimizer.param_groups[0]["lr"] = 0.1 / (1 + step // 3)  # group 1 keeps its rate
            recorder.learning_rates_used(0, optimizer.param_groups, step)
            used.append((step, [g["lr"] for g in optimizer.param_groups]))
        recorder.epoch_ended(epoch)
    recorder.learning_rate_changed(0, 1, 0.25, step=10)  # a change reported, not observed
    recorder.finish()
    recorder.close()
    table = ProvStore(tmp_path / "store").learning_rates(recorder.run_id)
    assert [rate_at(table, step, 0, group) for step, rates in used for group in (0, 1)] == [
        rate for _, rates in used for rate in rates
    ]
    assert rate_at(table, 10, 0, 1) == 0.25
    assert [row[2:] for row in table.rows if row[1] == 0] == [
        (None, None, 0.1),
        (0, 3, 0.05),  # steps 0-4 are epoch 0's
        (1, 6, 0.1 / 3),
        (1, 9, 0.025),
    ]
