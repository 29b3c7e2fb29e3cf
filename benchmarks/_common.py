"""Helpers shared by the benchmark scripts: machine facts, statistics, JSON output."""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import statistics
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter and warnings out of the tables."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def machine() -> dict[str, Any]:
    """CPU model, core count and the versions that shape the numbers."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    versions = {"python": platform.python_version()}
    for package in ("torch", "lightning", "pyoxigraph", "cnnprov", "tensorboard", "mlflow-skinny", "mlflow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": load,
        "versions": versions,
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str))


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (so output pastes straight into BENCHMARKS.md)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def peer_logger(kind: str, root: Path, name: str) -> Any:
    """A fresh logger of one kind under ``root``: prov, csv, tensorboard or mlflow."""
    if kind in ("prov", "prov-nousage"):  # prov-nousage: without the epochs' resource use (resource_use=False)
        from cnnprov import ProvLogger

        return ProvLogger(store=root / "provenance", run_name=name, resource_use=kind == "prov")
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(root / "csv", name="run")
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(root / "tb", name="run")
    if kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        # MLflow 3 refuses its file store unless asked; a file store keeps the run local and server-free.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return MLFlowLogger(experiment_name=name, tracking_uri=f"file:{root / 'mlruns'}")
    raise ValueError(f"unknown logger {kind!r}")
