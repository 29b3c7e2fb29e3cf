"""Where a run's record stands: the numbering and latest nodes the recorder mints from.

One :class:`RunState` per :class:`~cnnprov.capture.recorder.RunRecorder`, used
on the training thread only (the writer thread's state is in
:class:`~cnnprov.capture.conversion.MetricConverter`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyoxigraph import NamedNode

from cnnprov.capture.architecture_capture import ArchitectureCapture
from cnnprov.capture.resource_use import ResourceMeter
from cnnprov.capture.resume import RecordedRun
from cnnprov.capture.series import PointSeries
from cnnprov.capture.summaries import EpochStatistics


@dataclass
class RunState:
    """The counters and latest nodes of one run (training thread).

    Epoch indices here are the run's own. A caller that counts epochs its own
    way (a new Lightning Trainer counts from 0 again) has them mapped by
    :meth:`run_epoch`, after :meth:`number_stage` said where its count starts.
    """

    epochs: dict[int, float] = field(default_factory=dict)  # epoch index → its first start time
    current_epoch: int | None = None
    ended_epochs: set[int] = field(default_factory=set)
    last_ended: int | None = None  # the epoch that ended last: durable at the next wait for the store
    noted_durable: int | None = None  # the epoch last noted durable beside the store
    reopened_epochs: set[int] = field(default_factory=set)  # recorded before: a resumed attempt re-entered them
    checkpoints: int = 0
    latest_checkpoint: NamedNode | None = None
    # (optimizer, group) → the latest record of its rate (its lr setting or its last series) and that rate
    learning_rates: dict[tuple[int, int], tuple[NamedNode, float]] = field(default_factory=dict)
    learning_rate_series: int = 0  # the highest series number used
    # optimizer → each group's rate as last seen: what every optimizer step compares with
    rates_seen: dict[int, list[float | None]] = field(default_factory=dict)
    rate_points: dict[tuple[int, int], PointSeries] = field(default_factory=dict)  # changes not yet written
    rate_points_epoch: int | None = None  # the epoch (the run's) the changes not yet written took effect in
    optimizers: dict[int, NamedNode] = field(default_factory=dict)
    # Schedulers recorded (by index): each once, with the settings it started with. A continued run
    # whose earlier attempt recorded its optimizers recorded its schedulers with them.
    schedulers: set[int] = field(default_factory=set)
    schedulers_recorded_before: bool = False
    attempt: NamedNode | None = None
    epoch_statistics: EpochStatistics = field(default_factory=EpochStatistics)
    hyperparameter_texts: dict[str, str] = field(default_factory=dict)  # path → value text, for the listing literal
    epoch_offset: int = 0  # the caller's epoch + this = the run's
    outside_training: bool = False  # the caller's stage trains no epochs (validate, test)
    in_steps: bool = False  # values logged now are step-level (the loop is in an epoch's batches)
    trainer_recorded: bool = False  # the run's training-loop settings (its first attempt's) are recorded
    meter: ResourceMeter = field(default_factory=ResourceMeter)  # what the epoch in progress uses
    data_chain: Any = None  # the DataChain of the datasets the run's loaders served (capture.data_lineage)
    data_written: set[int] = field(default_factory=set)  # positions of that chain already recorded
    data_setup: NamedNode | None = None  # the DataModule setup that made the data recorded next
    data_stages: set[str] = field(default_factory=set)  # the stages whose DataModule setup is recorded
    architecture: ArchitectureCapture = field(default_factory=ArchitectureCapture)  # described once per run

    def continue_from(self, recorded: RecordedRun, checkpoint: NamedNode | None) -> None:
        """Pick up a stored run's numbering (``checkpoint``: the one this attempt resumes from, if known)."""
        self.epochs.update(recorded.epochs)
        self.checkpoints = recorded.checkpoints
        self.latest_checkpoint = checkpoint or recorded.latest_checkpoint
        self.epoch_statistics = EpochStatistics(len(recorded.epochs), recorded.epoch_seconds)
        self.learning_rate_series = recorded.learning_rate_series
        self.optimizers.update(recorded.optimizers)
        self.schedulers_recorded_before = bool(recorded.optimizers)
        self.learning_rates.update(recorded.learning_rates)
        self.trainer_recorded = True  # a continued run keeps its first attempt's loop settings
        for (optimizer, group), (_, rate) in sorted(recorded.learning_rates.items()):
            seen = self.rates_seen.setdefault(optimizer, [])
            seen.extend([None] * (group + 1 - len(seen)))  # unknown: seen at the next step
            seen[group] = rate

    @property
    def last_epoch(self) -> int | None:
        return max(self.epochs, default=None)

    def number_stage(self, training: bool, caller_epoch: int, restored: bool) -> None:
        """A stage of the caller starts, its epoch counter at ``caller_epoch``.

        A training stage is numbered after the epochs already recorded (so each
        index stays unique), unless the caller ``restored`` its counter from a
        checkpoint: then its count is the run's. Outside training the mapping
        stays as it was.
        """
        self.outside_training = not training
        if training:
            last = self.last_epoch
            self.epoch_offset = 0 if restored or last is None else max(0, last + 1 - caller_epoch)

    def run_epoch(self, caller_epoch: int) -> int:
        """The run's index of the caller's epoch."""
        return caller_epoch + self.epoch_offset

    def run_metrics(self, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        """The caller's metrics with their ``epoch`` key in the run's numbering; none outside training
        (a test value is no epoch's). The same mapping when nothing changes."""
        if not (self.outside_training or self.epoch_offset) or "epoch" not in metrics:
            return metrics
        mapped = dict(metrics)
        if self.outside_training:
            del mapped["epoch"]
        else:
            epoch = mapped["epoch"]
            # not a whole number: left as it is, for the writer thread to report
            with contextlib.suppress(Exception):
                mapped["epoch"] = int(epoch) + self.epoch_offset if float(epoch).is_integer() else epoch
        return mapped
