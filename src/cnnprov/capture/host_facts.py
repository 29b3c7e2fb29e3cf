"""What a process runs on and with: installed packages, the machine, the settings in its environment.

Every reader here is plain standard library, cheap enough for a background thread
(:func:`cnnprov.capture.environment.prefetch_environment` calls them), and never
fails: a fact that cannot be read is left out. torch is consulted only when the
process has imported it already, and CUDA is never initialised by a read here.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata

#: The environment variables recorded with a run: those that change what training computes or
#: how many threads and devices it has. Nothing else is read, as other variables hold secrets.
#: (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER: which GPUs; CUBLAS_WORKSPACE_CONFIG and
#: CUDA_LAUNCH_BLOCKING: deterministic cuBLAS kernels and synchronous launches; NVIDIA_TF32_OVERRIDE,
#: TORCH_ALLOW_TF32_CUBLAS_OVERRIDE: TF32 maths; the *_NUM_THREADS and MKL_CBWR: CPU threads and
#: MKL's reproducible code paths; PYTHONHASHSEED, PL_GLOBAL_SEED, PL_SEED_WORKERS: seeds;
#: NCCL_ALGO, NCCL_PROTO: the order of reductions; PYTORCH_CUDA_ALLOC_CONF: the allocator;
#: PYTORCH_ENABLE_MPS_FALLBACK: ops moved to the CPU on Apple silicon.)
RECORDED_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_LAUNCH_BLOCKING",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "MKL_CBWR",
    "PYTHONHASHSEED",
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
    "NCCL_ALGO",
    "NCCL_PROTO",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_ENABLE_MPS_FALLBACK",
)

#: Options on a command line whose value is a secret: recorded as ``--api-key=REDACTED``.
#: an option or a ``key=value`` override whose name ends in a secret's word (``--api-token``,
#: ``+logger.api_key``, ``password``), not one that merely contains it (``--tokenizer``, ``--max-tokens``)
_SECRET_NAME = re.compile(r"^[-+]*(?:[\w.-]*[-_.])?(password|passwd|secret|token|api[-_]?key|credentials?)$", re.I)
#: the user and password of a URL (``https://user:pw@host``)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")
REDACTED = "REDACTED"


@dataclass(frozen=True)
class GPU:
    """One GPU the driver reports: its index, model, memory and driver version."""

    index: int
    name: str
    memory_bytes: int | None = None
    driver: str | None = None


@dataclass(frozen=True)
class Machine:
    """The computer a process runs on, and the accelerator software torch was built with."""

    operating_system: str = ""
    cpu_model: str | None = None
    cpu_count: int | None = None
    available_cpu_count: int | None = None
    memory_bytes: int | None = None
    cuda: str | None = None
    cudnn: str | None = None
    gpus: tuple[GPU, ...] = field(default_factory=tuple)


def installed_packages() -> tuple[str, ...]:
    """Every distribution this interpreter can import, as sorted ``name==version`` (names normalised as pip does).

    A distribution found twice on ``sys.path`` counts as the first, the one ``import`` finds.
    Read once per process: what a process imported does not change under it, whatever pip does meanwhile.
    """
    return _installed_packages(tuple(sys.path))


@lru_cache(maxsize=4)
def _installed_packages(path: tuple[str, ...]) -> tuple[str, ...]:
    found: dict[str, str] = {}
    for distribution in metadata.distributions(path=list(path)):
        name = distribution.metadata["Name"]
        if name:
            found.setdefault(normalised_name(name), distribution.version)
    return tuple(sorted(f"{name}=={version}" for name, version in found.items()))


def normalised_name(name: str) -> str:
    """A distribution's name as PEP 503 compares them: lowercase, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def packages_sha256(packages: Sequence[str]) -> str:
    """The SHA-256 of a package list: its ``name==version`` lines joined by ``\\n`` (no final newline), UTF-8."""
    return hashlib.sha256("\n".join(packages).encode("utf-8")).hexdigest()


def recorded_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of :data:`RECORDED_VARIABLES` that are set; no other variable is read."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in RECORDED_VARIABLES if name in environ}


def command_line() -> tuple[str, ...]:
    """How this process was started: the interpreter's own arguments (``python -m pkg ...``), secrets redacted."""
    arguments = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return tuple(redacted(arguments))


def redacted(arguments: Sequence[str]) -> list[str]:
    """``arguments`` with the value of each secret-named option or override (``--token X``,
    ``--password=X``, ``+logger.api_key=X``) and the credentials of URLs replaced."""
    out: list[str] = []
    hide_next = False
    for argument in arguments:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, equals, _ = argument.partition("=")
        if _SECRET_NAME.match(name):
            if equals:
                out.append(f"{name}={REDACTED}")
            else:
                out.append(argument)
                hide_next = argument.startswith("-")  # a flag's value is the next argument
            continue
        out.append(_URL_CREDENTIALS.sub(f"{REDACTED}@", argument))
    return out


def machine() -> Machine:
    """The machine's facts (read once per process, the accelerator's when torch is imported)."""
    return _machine("torch" in sys.modules)


@lru_cache(maxsize=2)
def _machine(with_torch: bool) -> Machine:
    cuda = cudnn = None
    gpus: tuple[GPU, ...] = ()
    if with_torch:
        cuda, cudnn, gpus = _accelerator()
    return Machine(
        operating_system=platform.platform(),
        cpu_model=_cpu_model(),
        cpu_count=os.cpu_count(),
        available_cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        memory_bytes=_memory_bytes(),
        cuda=cuda,
        cudnn=cudnn,
        gpus=gpus,
    )


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            result = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            )
            if result.returncode == 0 and result.stdout.strip():
                return result.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or None


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def _accelerator() -> tuple[str | None, str | None, tuple[GPU, ...]]:
    """torch's CUDA and cuDNN versions and the GPUs, without initialising CUDA in this process.

    ``torch.cuda.is_available()`` is fork-safe under Lightning (it sets PYTORCH_NVML_BASED_CUDA_CHECK);
    the GPUs' models come from torch when CUDA is initialised already, else from ``nvidia-smi``.
    """
    torch = sys.modules["torch"]
    try:
        cuda = getattr(torch.version, "cuda", None)
        number = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        cudnn = str(number) if number else None
        if not torch.cuda.is_available():
            return cuda, cudnn, ()
        if torch.cuda.is_initialized():
            gpus = []
            for index in range(torch.cuda.device_count()):
                properties = torch.cuda.get_device_properties(index)
                gpus.append(GPU(index, properties.name, int(properties.total_memory)))
            return cuda, cudnn, tuple(gpus)
        return cuda, cudnn, nvidia_smi_gpus()
    except Exception:  # a broken CUDA install: the run is recorded without it
        return None, None, ()


def nvidia_smi_gpus() -> tuple[GPU, ...]:
    """The GPUs ``nvidia-smi`` reports (all the machine has, whatever CUDA_VISIBLE_DEVICES says)."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else ()


def parse_nvidia_smi(text: str) -> tuple[GPU, ...]:
    """GPUs from ``nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        fields = [part.strip() for part in line.split(",")]
        if len(fields) != 4 or not fields[0].isdigit():
            continue
        index, name, memory, driver = fields
        memory_bytes = int(memory) * 1024 * 1024 if memory.isdigit() else None  # reported in MiB
        gpus.append(GPU(int(index), name, memory_bytes, driver or None))
    return tuple(gpus)
