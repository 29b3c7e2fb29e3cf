"""Lightning used as its documentation shows, beyond one plain ``fit``: stages on their own,
predict, split and limited data, recorded as they happened."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset, random_split

from cnnprov import ProvLogger, ProvStore
from cnnprov.demo import DigitsCNN

from helpers import tiny_data, tiny_trainer

DATA = (
    "SELECT ?role ?class ?samples ?batches WHERE { GRAPH ?g { ?d <https://w3id.org/cnnprov/ns#dataRole> ?role ; "
    "<https://w3id.org/cnnprov/ns#pythonClass> ?class . "
    "OPTIONAL { ?d <https://w3id.org/cnnprov/ns#sampleCount> ?samples } "
    "OPTIONAL { ?d <https://w3id.org/cnnprov/ns#batchCount> ?batches } } }"
)


class Predicts(DigitsCNN):
    def predict_step(self, batch, batch_idx):
        return self(batch[0]).argmax(1)


def images(n: int = 40) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator))


def test_a_run_that_only_tested_and_predicted_says_so_and_records_its_data(tmp_path):
    store_path = tmp_path / "provenance"
    logger = ProvLogger(store=store_path)
    trainer = tiny_trainer(tmp_path, logger)
    model = Predicts()
    trainer.test(model, datamodule=tiny_data())
    trainer.predict(model, dataloaders=DataLoader(images(), batch_size=8))
    (run,) = ProvStore(store_path).runs().to_dicts()
    assert (run["epochs"], sorted(run["stages"].split(","))) == (0, ["predict", "test"])
    roles = {row["role"]: row for row in ProvStore(store_path).sparql(DATA).to_dicts()}
    assert set(roles) == {"test", "predict"}
    assert (roles["predict"]["samples"], roles["predict"]["batches"]) == (40, 5)


def test_split_data_is_recorded_as_the_dataset_it_came_from_with_the_batches_the_limits_let_through(tmp_path):
    store_path = tmp_path / "provenance"
    train_part, val_part = random_split(images(64), [48, 16], generator=torch.Generator().manual_seed(1))
    trainer = tiny_trainer(tmp_path, ProvLogger(store=store_path), max_epochs=1, limit_train_batches=3)
    trainer.fit(DigitsCNN(), DataLoader(train_part, batch_size=8), DataLoader(val_part, batch_size=8))
    (run,) = ProvStore(store_path).runs().to_dicts()
    assert run["stages"] == "fit"
    roles = {row["role"]: row for row in ProvStore(store_path).sparql(DATA).to_dicts()}
    assert roles["train"]["class"] == roles["validation"]["class"] == "torch.utils.data.dataset.TensorDataset"
    assert (roles["train"]["samples"], roles["train"]["batches"]) == (48, 3)  # limit_train_batches=3 of 6
    assert (roles["validation"]["samples"], roles["validation"]["batches"]) == (16, 2)  # limit_val_batches=2


CHECKPOINTS = (
    "SELECT ?path ?epoch ?by WHERE { GRAPH ?g { ?c a <https://w3id.org/cnnprov/ns#Checkpoint> ; "
    "<https://w3id.org/cnnprov/ns#filePath> ?path ; <http://www.w3.org/ns/prov#wasGeneratedBy> ?by . "
    "OPTIONAL { ?c <https://w3id.org/cnnprov/ns#atEpoch> ?epoch } } }"
)


def test_checkpoints_saved_by_hand_during_and_after_fit_are_recorded_in_epochs_that_ran(tmp_path):
    store_path = tmp_path / "provenance"

    class SavesByHand(DigitsCNN):
        def on_train_epoch_end(self) -> None:
            if self.current_epoch == 0:
                self.trainer.save_checkpoint(tmp_path / "by-hand-epoch-0.ckpt")

    logger = ProvLogger(store=store_path)
    trainer = tiny_trainer(tmp_path, logger, max_epochs=2, enable_checkpointing=False)
    trainer.fit(SavesByHand(), datamodule=tiny_data())
    trainer.save_checkpoint(tmp_path / "final.ckpt")  # after fit: the run's stages are over
    rows = {row["path"].rsplit("/", 1)[-1]: row for row in ProvStore(store_path).sparql(CHECKPOINTS).to_dicts()}
    assert set(rows) == {"by-hand-epoch-0.ckpt", "final.ckpt"}
    assert rows["by-hand-epoch-0.ckpt"]["epoch"] == 0 and rows["by-hand-epoch-0.ckpt"]["by"].endswith("/epoch-0")
    assert rows["final.ckpt"]["epoch"] == 1  # Lightning's counter says 2, an epoch that never ran
    assert rows["final.ckpt"]["by"].endswith(f"/run-{logger.run_id}")
    (run,) = ProvStore(store_path).runs().to_dicts()
    assert run["status"] == "success"
    resumed = ProvLogger(store=store_path)  # the file it saved after fit leads back to the run
    tiny_trainer(tmp_path, resumed, max_epochs=3).fit(
        DigitsCNN(), datamodule=tiny_data(), ckpt_path=tmp_path / "final.ckpt"
    )
    assert resumed.run_id == logger.run_id


def test_a_plateau_scheduler_resumed_and_tested_keeps_one_value_per_setting(tmp_path):
    """ReduceLROnPlateau's state changes as it trains; its settings are recorded once, as it started."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from cnnprov.analysis.validate import validate_store

    class Plateau(DigitsCNN):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

    store_path = tmp_path / "provenance"

    def fit(epochs: int, ckpt: str | None) -> ProvLogger:
        logger = ProvLogger(store=store_path, version="plateau")
        trainer = tiny_trainer(tmp_path, logger, max_epochs=epochs, callbacks=[ModelCheckpoint(save_last=True)])
        trainer.fit(Plateau(), datamodule=tiny_data(), ckpt_path=ckpt)
        trainer.test(datamodule=tiny_data())
        return logger

    first, second = fit(2, None), fit(3, "last")
    assert first.run_id == second.run_id
    report = validate_store(store_path)
    assert report.conforms, [finding for run in report.runs for finding in run.findings]


def test_values_are_epoch_or_step_level_as_lightning_logged_them_with_validation_twice_an_epoch(tmp_path):
    """val_check_interval=0.5: each validation's values are epoch-level, validation_step's on_step values
    and the training steps' are series, and every value CSVLogger wrote is recovered exactly."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    class StepValidation(DigitsCNN):
        def validation_step(self, batch, batch_idx):
            loss = super().validation_step(batch, batch_idx)
            self.log("val_step_loss", torch.tensor(0.5 + batch_idx), on_step=True, on_epoch=False)
            return loss

    logger, csv_logger = ProvLogger(store=tmp_path / "store"), CSVLogger(tmp_path / "csv", name="run")
    trainer = tiny_trainer(tmp_path, [logger, csv_logger], val_check_interval=0.5, enable_checkpointing=False)
    trainer.fit(StepValidation(), datamodule=tiny_data())
    store = ProvStore(tmp_path / "store")
    values = store.metric_values(logger.run_id)
    with open(csv_logger.log_dir + "/metrics.csv", newline="") as handle:
        logged = sorted(
            (name, int(row["step"]), float(value))
            for row in csv.DictReader(handle)
            for name, value in row.items()
            if name not in ("step", "epoch") and value != ""
        )
    assert sorted((row["metric"], row["step"], row["value"]) for row in values) == logged
    levels = {(row["metric"], row["level"]) for row in values}
    assert {("val_loss", "epoch"), ("train_loss_step", "step"), ("val_step_loss", "step")} <= levels
    assert not {name for name, level in levels if level == "step"} & {"val_loss", "val_acc", "train_loss_epoch"}
    # the default epoch-metrics lists the validation values although there are two an epoch
    rows = store.query("epoch-metrics", run=logger.run_id).to_dicts()
    by_metric = {(row["epoch"], row["metric"]): row for row in rows}
    assert by_metric[(0, "val_loss")]["n_values"] == 2 and by_metric[(1, "val_loss")]["n_values"] == 2
    assert all(row["value_level"] == "epoch" for row in rows)
    steps = store.query("epoch-metrics", run=logger.run_id, level="step").to_dicts()
    assert {row["metric"] for row in steps} == {"train_loss_step", "train_acc_step", "val_step_loss"}
    train = [row for row in steps if row["metric"] == "train_loss_step"]
    assert [row["n_values"] for row in train] == [4, 4]  # limit_train_batches=4, every step logged


def test_an_iterable_dataset_gets_the_batch_count_its_first_epoch_took(tmp_path):
    from torch.utils.data import IterableDataset

    class Stream(IterableDataset):
        def __iter__(self):
            generator = torch.Generator().manual_seed(0)
            for _ in range(5 * 8):  # 5 batches of 8
                yield torch.rand(1, 8, 8, generator=generator), torch.randint(0, 10, (), generator=generator)

    class StreamCNN(DigitsCNN):
        def train_dataloader(self):
            return DataLoader(Stream(), batch_size=8)

    logger = ProvLogger(store=tmp_path / "store")
    trainer = tiny_trainer(tmp_path, logger, max_epochs=2, limit_train_batches=None, limit_val_batches=0)
    trainer.fit(StreamCNN())
    (row,) = ProvStore(tmp_path / "store").sparql(
        "SELECT ?class ?batches WHERE { ?d <https://w3id.org/cnnprov/ns#dataRole> 'train' ; "
        "<https://w3id.org/cnnprov/ns#pythonClass> ?class ; <https://w3id.org/cnnprov/ns#batchCount> ?batches }"
    ).to_dicts()
    assert row["class"].endswith("Stream") and row["batches"] == 5
