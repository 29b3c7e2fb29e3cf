"""Bounded memory: a million ``log_metrics`` calls through a RunRecorder, against ten thousand.

Each size runs in a fresh process (peak RSS is per process): one run, one epoch
with no boundary in it (the worst case: no epoch end flushes the buffer), a
train loss logged at every step as fast as Python can call ``log_metrics``, so
the writer thread falls behind and only its bound (a full buffer goes to the
writer, at most ``max_batches`` buffers wait for it, then ``log_metrics``
waits) keeps memory flat. RSS is sampled as the calls go; the table shows the
peak and how many records were held in memory at most.

Usage::

    python benchmarks/memory.py                    # 10,000 and 1,000,000 calls (a few minutes)
    python benchmarks/memory.py --calls 10000,100000,1000000 --json memory.json
    python benchmarks/memory.py --smoke            # seconds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, peak_rss_mib, table, write_json


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(calls: int, metrics: int) -> dict[str, Any]:
    """One process: ``calls`` log_metrics calls, RSS samples, and the peak."""
    from cnnprov import RunRecorder
    from cnnprov.storage.local import wait_released

    baseline = current_rss_mib()
    with tempfile.TemporaryDirectory(prefix="cnnprov-memory-") as directory:
        recorder = RunRecorder(Path(directory) / "provenance", name=f"{calls}-calls", serve_reads=False)
        recorder.start()
        recorder.epoch_started(0)
        names = [f"metric_{i}" for i in range(metrics)]
        samples = []
        held = 0
        every = max(1, calls // 20)
        started = time.perf_counter()
        for step in range(calls):
            recorder.log_metrics({**{name: 1.0 / (step + 1) for name in names}, "epoch": 0}, step=step)
            if step % 1000 == 0:
                held = max(held, recorder._writer.pending)
            if (step + 1) % every == 0:
                samples.append([step + 1, round(current_rss_mib(), 1)])
        calls_s = time.perf_counter() - started
        recorder.epoch_ended(0)
        recorder.finish("success")
        recorder.close()
        total_s = time.perf_counter() - started
        wait_released(Path(directory) / "provenance")  # before the directory goes
    return {
        "calls": calls,
        "metrics_per_call": metrics,
        "baseline_rss_mib": round(baseline, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "max_records_held": held,
        "calls_s": calls_s,
        "total_s": total_s,
        "rss_samples": samples,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="10000,1000000", help="comma-separated call counts (default 10000,1000000)")
    parser.add_argument("--metrics", type=int, default=1, help="metrics per call, besides epoch (default 1)")
    parser.add_argument("--smoke", action="store_true", help="1,000 and 5,000 calls: checks the script")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.metrics)))
        return {}
    sizes = [1000, 5000] if args.smoke else [int(c) for c in args.calls.split(",")]
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_average_at_start']}")
    results = []
    for calls in sizes:
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(calls), "--metrics", str(args.metrics)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        results.append(result)
        print(f"{calls:,} calls: peak RSS {result['peak_rss_mib']:.0f} MiB, {result['total_s']:.1f} s", flush=True)
    print()
    print(
        table(
            [
                "log_metrics calls",
                "peak RSS MiB",
                "RSS before start MiB",
                "growth MiB",
                "records held at most",
                "calls s",
                "until stored s",
            ],
            [
                [
                    f"{r['calls']:,}",
                    f"{r['peak_rss_mib']:.0f}",
                    f"{r['baseline_rss_mib']:.0f}",
                    f"{r['peak_rss_mib'] - r['baseline_rss_mib']:.0f}",
                    f"{r['max_records_held']:,}",
                    f"{r['calls_s']:.1f}",
                    f"{r['total_s']:.1f}",
                ]
                for r in results
            ],
        )
    )
    largest = results[-1]
    print()
    print(
        "RSS (MiB) as the calls go, largest run: " + ", ".join(f"{n:,}: {rss:.0f}" for n, rss in largest["rss_samples"])
    )
    payload = {
        "benchmark": "memory",
        "machine": info,
        "config": {"sizes": sizes, "metrics": args.metrics},
        "results": results,
    }
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
