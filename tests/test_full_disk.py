"""A disk that fills up during a run, and is freed again: training goes on, nothing is lost.

Run on a real small filesystem, a tmpfs the test mounts (as root, as CI runs; reported as not
run otherwise), so the store meets the error a full disk gives: ENOSPC from RocksDB.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import lightning as L

from cnnprov import ProvLogger, ProvStore
from cnnprov.demo import DigitsCNN

from helpers import ok, tiny_data, tiny_trainer, tmpfs


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no byte left (unbuffered: closing it writes nothing more)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(descriptor, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)


class FillsTheDisk(L.Callback):
    """Fills the disk when epoch 1 ends and frees it when epoch 4 starts."""

    def __init__(self, filler: Path) -> None:
        self.filler = filler

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            fill(self.filler)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 4:
            self.filler.unlink()


def test_a_disk_that_fills_and_is_freed_mid_run_loses_no_epoch_and_warns_once(tmp_path, caplog):
    with tmpfs(tmp_path / "disk", size="32m") as disk:
        store = disk / "provenance"
        logger = ProvLogger(store=store, run_name="full disk", save_dir=tmp_path)  # checkpoints elsewhere
        trainer = tiny_trainer(tmp_path, logger, max_epochs=6, callbacks=[FillsTheDisk(disk / "filler")])
        with caplog.at_level(logging.WARNING, logger="cnnprov"):
            trainer.fit(DigitsCNN(), datamodule=tiny_data())
        refused = [r for r in caplog.records if "could not write to the provenance store" in r.getMessage()]
        assert len(refused) == 1 and "No space left on device" in refused[0].getMessage()  # once, not per epoch
        assert any("takes writes again" in r.getMessage() for r in caplog.records)
        (run,) = ProvStore(store).runs().to_dicts()
        assert (run["status"], run["epochs"]) == ("success", 6)
        rows = ProvStore(store).query("epoch-metrics", run=run["run_id"]).to_dicts()
        validated = sorted({row["epoch"] for row in rows if row["metric"] == "val_acc"})
        assert validated == [0, 1, 2, 3, 4, 5]  # the epochs trained while the disk was full are there


def test_a_disk_still_full_when_the_run_ends_keeps_the_unwritten_records_for_cnnprov_push(tmp_path, caplog):
    """The spill directory beside the store is given a filesystem of its own here, with room."""
    with tmpfs(tmp_path / "disk", size="32m") as disk, tmpfs(disk / "provenance-spill", size="8m"):
        store = disk / "provenance"
        logger = ProvLogger(store=store, run_name="still full", save_dir=tmp_path)

        class FillsAndKeepsFull(L.Callback):
            def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
                if trainer.current_epoch == 0:
                    fill(disk / "filler")

        trainer = tiny_trainer(tmp_path, logger, max_epochs=3, callbacks=[FillsAndKeepsFull()])
        with caplog.at_level(logging.WARNING, logger="cnnprov"):
            trainer.fit(DigitsCNN(), datamodule=tiny_data())  # does not raise: the records are kept
        spilled = [r.getMessage() for r in caplog.records if "cnnprov push --store" in r.getMessage()]
        assert len(spilled) == 1
        spill = Path(spilled[0].rsplit(" ", 1)[-1])
        assert spill.is_file() and spill.parent == disk / "provenance-spill"
        (disk / "filler").unlink()  # room again: the command the warning gave writes them
        ok("push", "--store", store, spill)
        (run,) = ProvStore(store).runs().to_dicts()
        assert (run["status"], run["epochs"]) == ("success", 3)
        rows = ProvStore(store).query("epoch-metrics", run=run["run_id"]).to_dicts()
        assert sorted({row["epoch"] for row in rows if row["metric"] == "val_acc"}) == [0, 1, 2]
