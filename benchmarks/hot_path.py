"""Time on the training thread per ``log_metrics`` + ``save`` call, ProvLogger beside its peers.

Drives each logger directly, as Lightning's logger connector does after every
logged step: ``logger.log_metrics(metrics=..., step=...)`` with four metrics and
Lightning's ``epoch`` key, then ``logger.save()``. Loggers have started before
timing begins (their first call opened their store or files), and take turns in
blocks of calls (shuffled every round) so that a noisy machine hits them alike.
After each ProvLogger block its buffer is flushed outside the timing, as an
epoch boundary would, so its writer thread does not slow the next logger; that
flush is reported on its own, with the CPU the writer thread spent per call
(background work on another core, not on the training thread).

Fixed costs are timed on fresh loggers: the first call (opens the store or
files) and ``finalize("success")`` (recording the end, closing; a ProvLogger's
backlog of calls is flushed before, untimed, as an epoch end would have).

Usage::

    python benchmarks/hot_path.py                  # 7 rounds × 5,000 calls per logger
    python benchmarks/hot_path.py --json hot_path.json
    python benchmarks/hot_path.py --smoke          # seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cnnprov.storage.local import wait_released

from _common import machine, median, peer_logger, quiet_lightning, table, write_json

quiet_lightning()


def available() -> list[str]:
    """prov and csv always; tensorboard and mlflow where they import."""
    optional = [name for name in ("tensorboard", "mlflow") if importlib.util.find_spec(name) is not None]
    return ["prov", "csv", *optional]


def make_logger(kind: str, root: Path) -> Any:
    return peer_logger(kind, root, "hot-path")


def metrics_for(step: int) -> dict[str, float]:
    """What Lightning passes after ``metrics_to_scalars``: plain floats, and the epoch."""
    return {
        "train_loss": 1.0 / (step + 1),
        "train_acc": 0.5 + step * 1e-6,
        "val_loss": 0.9 / (step + 2),
        "val_acc": 0.4 + step * 1e-6,
        "epoch": step // 1000,
    }


def thread_cpu_s(thread: threading.Thread | None) -> float:
    """CPU seconds a (live) thread has used; 0 when there is none."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def writer_thread(logger: Any) -> threading.Thread | None:
    recorder = getattr(logger, "_recorder", None)
    writer = getattr(recorder, "_writer", None)
    return getattr(writer, "_thread", None)


def timed_block(logger: Any, kind: str, payloads: list[dict], first_step: int) -> dict[str, float]:
    """One block of calls; per-call nanoseconds and, for ProvLogger, the boundary flush and writer CPU."""
    perf = time.perf_counter_ns
    log_metrics, save = logger.log_metrics, logger.save
    durations = []
    epoch = first_step // len(payloads)
    if kind == "prov":  # a training epoch's steps, as ProvCallback marks them: values go into series
        recorder = logger.experiment
        if not recorder.started:  # the first block: as the logger's first call would
            recorder.start(new_run=True)
        recorder.epoch_started(epoch)
        recorder.in_steps = True
    writer = writer_thread(logger)
    cpu_before = thread_cpu_s(writer)
    block_start = perf()
    for offset, metrics in enumerate(payloads):
        started = perf()
        log_metrics(metrics=metrics, step=first_step + offset)
        save()
        durations.append(perf() - started)
    block_ns = perf() - block_start
    result = {
        "mean_us": block_ns / len(payloads) / 1000,
        "p50_us": statistics.median(durations) / 1000,
        "p99_us": sorted(durations)[int(0.99 * (len(durations) - 1))] / 1000,
        "max_us": max(durations) / 1000,
    }
    if kind == "prov":
        started = perf()
        recorder.epoch_ended(epoch)  # the epoch's series are written
        recorder.flush(wait=True)  # what the next epoch start waits for
        result["boundary_flush_ms"] = (perf() - started) / 1e6
        result["writer_cpu_us_per_call"] = (thread_cpu_s(writer) - cpu_before) / len(payloads) * 1e6
    return result


def fixed_costs(kind: str, calls: int) -> dict[str, float]:
    """A fresh logger: its first call (opens store/files), ``calls`` more, then ``finalize``."""
    root = Path(tempfile.mkdtemp(prefix=f"cnnprov-hot-{kind}-"))
    try:
        logger = make_logger(kind, root)
        started = time.perf_counter()
        logger.log_metrics(metrics=metrics_for(0), step=0)
        logger.save()
        first_ms = (time.perf_counter() - started) * 1e3
        for step in range(1, calls):
            logger.log_metrics(metrics=metrics_for(step), step=step)
            logger.save()
        result = {"first_call_ms": first_ms}
        if kind == "prov":
            # the store opens on the writer thread; the first epoch start would wait for it
            logger.experiment._writer.wait_open()
            result["ready_ms"] = (time.perf_counter() - started) * 1e3
            logger.experiment.flush(wait=True)  # the backlog of calls is not a fixed cost
        started = time.perf_counter()
        logger.finalize("success")
        result["finalize_ms"] = (time.perf_counter() - started) * 1e3
        if kind == "prov":  # kept open for a next run, else let go of in the background: asked now
            wait_released(root / "provenance")
            result["released_ms"] = (time.perf_counter() - started) * 1e3
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument("--calls", type=int, default=5000, help="calls per logger per round (default 5,000)")
    parser.add_argument("--fresh", type=int, default=5, help="fresh loggers per kind for the fixed costs (default 5)")
    parser.add_argument("--loggers", default=None, help="comma-separated subset of prov,csv,tensorboard,mlflow")
    parser.add_argument("--smoke", action="store_true", help="tiny: checks the script, measures nothing")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.calls, args.fresh = 1, 50, 1
    kinds = available()
    if args.loggers:
        kinds = [k for k in kinds if k in args.loggers.split(",")]
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_average_at_start']}")
    print(f"{args.rounds} rounds × {args.calls} calls per logger; loggers: {', '.join(kinds)}")

    root = Path(tempfile.mkdtemp(prefix="cnnprov-hot-"))
    try:
        loggers = {kind: make_logger(kind, root) for kind in kinds}
        steps = {kind: 0 for kind in kinds}
        for kind, logger in loggers.items():  # start them: first call opens store / files
            timed_block(logger, kind, [metrics_for(i) for i in range(min(200, args.calls))], 0)
            steps[kind] = args.calls
        order = random.Random(0)
        blocks: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
        for round_index in range(args.rounds):
            shuffled = list(kinds)
            order.shuffle(shuffled)
            for kind in shuffled:
                first = steps[kind]
                payloads = [metrics_for(first + i) for i in range(args.calls)]
                blocks[kind].append(timed_block(loggers[kind], kind, payloads, first))
                steps[kind] += args.calls
            print(
                f"round {round_index + 1}/{args.rounds}: "
                + ", ".join(f"{k} {blocks[k][-1]['mean_us']:.1f} µs" for k in kinds)
            )
        for logger in loggers.values():
            logger.finalize("success")
        wait_released(root / "provenance")  # kept open for a next run: let go of it before it goes
    finally:
        shutil.rmtree(root, ignore_errors=True)

    fixed: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for _ in range(args.fresh):
        for kind in kinds:
            fixed[kind].append(fixed_costs(kind, min(args.calls, 1000)))

    results = {}
    for kind in kinds:
        means = [b["mean_us"] for b in blocks[kind]]
        results[kind] = {
            "median_us_per_call": median(means),
            "min_us_per_call": min(means),
            "max_us_per_call": max(means),
            "p99_us": median([b["p99_us"] for b in blocks[kind]]),
            "max_single_call_us": max(b["max_us"] for b in blocks[kind]),
            "first_call_ms": median([f["first_call_ms"] for f in fixed[kind]]),
            "finalize_ms": median([f["finalize_ms"] for f in fixed[kind]]),
            "rounds": blocks[kind],
        }
        for background in ("ready_ms", "released_ms"):
            if all(background in f for f in fixed[kind]):
                results[kind][background] = median([f[background] for f in fixed[kind]])
        if kind == "prov":
            results[kind]["boundary_flush_ms_per_block"] = median([b["boundary_flush_ms"] for b in blocks[kind]])
            results[kind]["writer_cpu_us_per_call"] = median([b["writer_cpu_us_per_call"] for b in blocks[kind]])
    print()
    print("Training thread, per log_metrics + save call (4 metrics + epoch):")
    print(
        table(
            ["logger", "median µs/call", "min", "max", "p99 µs", "slowest call µs"],
            [
                [
                    k,
                    f"{r['median_us_per_call']:.1f}",
                    f"{r['min_us_per_call']:.1f}",
                    f"{r['max_us_per_call']:.1f}",
                    f"{r['p99_us']:.1f}",
                    f"{r['max_single_call_us']:.0f}",
                ]
                for k, r in results.items()
            ],
        )
    )
    if "prov" in results:
        prov = results["prov"]
        print()
        print(
            f"ProvLogger background: writer thread {prov['writer_cpu_us_per_call']:.0f} µs CPU per call "
            f"(off the training thread); flush after {args.calls} calls: {prov['boundary_flush_ms_per_block']:.2f} ms"
        )
    print()
    print(f"Fixed costs (median of {args.fresh} fresh loggers):")
    print(
        table(
            [
                "logger",
                "first call ms",
                "store open (background) ms",
                "finalize ms",
                "store let go ms (background, or when asked)",
            ],
            [
                [
                    k,
                    f"{r['first_call_ms']:.1f}",
                    f"{r['ready_ms']:.1f}" if "ready_ms" in r else "-",
                    f"{r['finalize_ms']:.1f}",
                    f"{r['released_ms']:.1f}" if "released_ms" in r else "-",
                ]
                for k, r in results.items()
            ],
        )
    )
    payload = {
        "benchmark": "hot_path",
        "machine": info,
        "config": {
            "rounds": args.rounds,
            "calls": args.calls,
            "fresh": args.fresh,
            "smoke": args.smoke,
            "loggers": kinds,
        },
        "results": results,
    }
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
