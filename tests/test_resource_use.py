"""What each epoch used of the machine, recorded through real Lightning training."""

from __future__ import annotations

import time

import lightning as L

from cnnprov import ProvLogger, ProvStore
from cnnprov.demo import DigitsCNN

from helpers import tiny_data, tiny_trainer


class StepClock(L.Callback):
    """Times each training step itself, to compare with the record."""

    def __init__(self) -> None:
        self.durations: dict[int, list[float]] = {}
        self._started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.durations.setdefault(trainer.current_epoch, []).append(time.perf_counter() - self._started)


def test_each_epoch_records_its_cpu_memory_and_step_times(tmp_path):
    clock = StepClock()
    logger = ProvLogger(store=tmp_path / "provenance")
    tiny_trainer(tmp_path, logger, max_epochs=2, limit_train_batches=5, callbacks=[clock]).fit(
        DigitsCNN(), datamodule=tiny_data()
    )
    rows = ProvStore(tmp_path / "provenance").query("system-usage", run=logger.run_id).to_dicts()
    assert [row["epoch"] for row in rows] == [0, 1]
    for row in rows:
        measured = clock.durations[row["epoch"]]
        assert row["steps"] == len(measured) == 5
        # the same steps, timed by another callback around the same hooks
        assert abs(row["step_mean_ms"] - 1000 * sum(measured) / 5) <= 0.2 * row["step_mean_ms"] + 2
        assert max(measured) * 1000 * 1.2 + 2 >= row["step_p95_ms"] >= min(measured) * 1000 * 0.8
        assert 0 < row["step_mean_ms"] * 5 / 1000 <= row["duration_s"]
        assert row["cpu_s"] > 0 and row["peak_rss_mib"] > 50  # torch alone is more
        assert row["gpu_peak_mib"] is None and row["gpu_util_percent"] is None  # no GPU here
    assert rows[1]["peak_rss_mib"] >= rows[0]["peak_rss_mib"]  # a peak so far never falls


def test_resource_use_can_be_turned_off(tmp_path):
    logger = ProvLogger(store=tmp_path / "provenance", resource_use=False)
    tiny_trainer(tmp_path, logger, max_epochs=2).fit(DigitsCNN(), datamodule=tiny_data())
    store = ProvStore(tmp_path / "provenance")
    assert store.query("system-usage", run=logger.run_id).rows == []
    assert [row["epochs"] for row in store.runs()] == [2]
