"""Bytes a step-level value costs: on disk and in an N-Quads export, series against entities.

Records pairs of stores through :class:`cnnprov.RunRecorder` (the recorder and writer that
training uses) that differ only in the number of logged steps per epoch, and reports the
difference in size divided by the difference in values, so that what a run costs once (its
agents, settings, epochs, epoch-level values) cancels out. Each store: ``--runs`` runs of
``--epochs`` epochs, each epoch a train loss at every step (``per_step=True``, as ProvLogger
logs Lightning's ``on_step`` values) and two epoch-level values. Both ways of storing
step-level values are measured in the same run: ``series`` (one ``cnnprov:MetricSeries`` per
epoch and measure, the default) and ``entities`` (one ``mls:ModelEvaluation`` each).

Usage::

    python benchmarks/bytes_per_value.py
    python benchmarks/bytes_per_value.py --json bytes.json
    python benchmarks/bytes_per_value.py --smoke
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cnnprov
from cnnprov import ProvStore, RunRecorder

from _common import machine, table, write_json


def record(path: Path, runs: int, epochs: int, steps: int, step_values: str) -> None:
    with cnnprov.open_session(path, serve_reads=False) as session:
        for index in range(runs):
            recorder = RunRecorder(session, name=f"run-{index}", step_values=step_values)
            recorder.start(new_run=True)
            recorder.log_hyperparameters({"lr": 0.01 * (index + 1), "batch_size": 32})
            step = 0
            for epoch in range(epochs):
                recorder.epoch_started(epoch)
                for _ in range(steps):
                    loss = 2.3 / (1 + step * 0.013)
                    recorder.log_metrics({"train_loss_step": loss, "epoch": epoch}, step=step, per_step=True)
                    step += 1
                epoch_level = {"val_loss": 1.0 / (epoch + 1), "val_acc": 0.5 + epoch / 100, "epoch": epoch}
                recorder.log_metrics(epoch_level, step)
                recorder.epoch_ended(epoch)
            recorder.finish("success")
            recorder.close(wait=True)


def directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def measure(work: Path, runs: int, epochs: int, steps: int, step_values: str) -> dict[str, int]:
    path = work / f"{step_values}-{steps}"
    record(path, runs, epochs, steps, step_values)
    nquads = len(ProvStore(path).export("nquads"))
    return {"disk": directory_bytes(path), "nquads": nquads, "values": runs * epochs * steps}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per store (default 5)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10)")
    parser.add_argument(
        "--steps", type=int, nargs=2, default=(50, 250), help="steps per epoch of the pair (default 50 250)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny stores: checks the script, measures nothing")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.epochs, args.steps = 1, 2, (3, 6)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_average_at_start']}")
    fewer, more = args.steps
    work = Path(tempfile.mkdtemp(prefix="cnnprov-bytes-"))
    results: dict[str, Any] = {}
    try:
        for form in ("series", "entities"):
            small = measure(work, args.runs, args.epochs, fewer, form)
            large = measure(work, args.runs, args.epochs, more, form)
            added = large["values"] - small["values"]
            results[form] = {
                "disk_bytes_per_added_value": (large["disk"] - small["disk"]) / added,
                "nquads_bytes_per_added_value": (large["nquads"] - small["nquads"]) / added,
                "disk_bytes_per_value_overall": large["disk"] / (large["values"] + 2 * args.runs * args.epochs),
                "stores": {"fewer": small, "more": large},
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{args.runs} runs × {args.epochs} epochs × ({fewer} or {more} step values + 2 epoch-level values)"
    )
    rows = [
        [
            form,
            f"{result['disk_bytes_per_added_value']:,.0f}",
            f"{result['nquads_bytes_per_added_value']:,.0f}",
            f"{result['disk_bytes_per_value_overall']:,.0f}",
        ]
        for form, result in results.items()
    ]
    print(table(["step values as", "disk B / added value", "N-Quads B / added value", "disk B / value overall"], rows))
    payload = {"benchmark": "bytes_per_value", "machine": info, "config": vars(args), "results": results}
    if args.json:
        write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
