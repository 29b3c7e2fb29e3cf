"""What an epoch used of the machine: CPU time, memory, time per step, and a GPU's memory and load.

Measured on the training thread at almost no cost: two clock reads a step (``perf_counter``)
and, at an epoch's start and end, the process's CPU time and peak resident memory
(``getrusage``). The process's CPU time counts every thread of it, the data loader's and
cnnprov's writer included; peak RSS is the process's peak so far (the kernel keeps no per-epoch
peak; none on Windows). On a CUDA device that torch has initialized: the epoch's peak allocated
memory, for which torch's peak counters are reset at each epoch's start (so
``torch.cuda.max_memory_allocated()`` counts from the epoch's start for other code too), and the
device's utilisation read once at the epoch's end (a moment's load, not the epoch's mean) when the
driver's NVML library answers.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

try:
    import resource
except ImportError:  # Windows: no getrusage, so no peak memory
    resource = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ResourceUse:
    """What one epoch used."""

    cpu_seconds: float
    peak_rss_bytes: int | None
    steps: int
    step_mean_seconds: float | None
    step_p95_seconds: float | None
    gpu_peak_allocated_bytes: int | None = None
    gpu_utilization_percent: float | None = None


class ResourceMeter:
    """Meters one epoch at a time: :meth:`start`, :meth:`step_started`/:meth:`step_ended` around each
    training step, :meth:`finish` at the end."""

    __slots__ = ("_cpu", "_durations", "_step_start")

    def __init__(self) -> None:
        self._cpu: float | None = None
        self._durations: list[float] = []
        self._step_start: float | None = None

    def start(self) -> None:
        self._cpu = time.process_time()
        self._durations = []
        self._step_start = None
        cuda = _cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()

    def step_started(self) -> None:
        self._step_start = time.perf_counter()

    def step_ended(self) -> None:
        started = self._step_start
        if started is not None:
            self._durations.append(time.perf_counter() - started)
            self._step_start = None

    def finish(self) -> ResourceUse | None:
        """The epoch's use (None if it was never started)."""
        if self._cpu is None:
            return None
        cpu, self._cpu = time.process_time() - self._cpu, None
        durations = sorted(self._durations)
        mean = sum(durations) / len(durations) if durations else None
        p95 = durations[max(math.ceil(0.95 * len(durations)) - 1, 0)] if durations else None  # nearest rank
        peak = None
        if resource is not None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        gpu_peak, gpu_load = None, None
        cuda = _cuda()
        if cuda is not None:
            gpu_peak = int(cuda.max_memory_allocated())
            try:
                gpu_load = float(cuda.utilization())
            except Exception:  # no NVML (pynvml) to ask: the load is not known
                gpu_load = None
        return ResourceUse(cpu, peak, len(durations), mean, p95, gpu_peak, gpu_load)


def _cuda() -> Any:
    """torch.cuda when the process uses a CUDA device (never imports torch, never initializes CUDA)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    cuda = torch.cuda
    try:
        return cuda if cuda.is_available() and cuda.is_initialized() else None
    except Exception:
        return None
