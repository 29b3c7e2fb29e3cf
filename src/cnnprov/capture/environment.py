"""Facts about the process a run executes in: who, where, with which software."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class RunEnvironment:
    """Who ran the training, where, with which software and code."""

    user: str
    hostname: str
    process_id: int
    software: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    random_seed: int | None = None


def software_versions(packages: tuple[str, ...] = ("cnnprov", "lightning", "torch")) -> dict[str, str]:
    """Installed versions of the packages that shape a run, plus Python's (read once per process)."""
    return dict(_software_versions(packages))


@lru_cache(maxsize=8)
def _software_versions(packages: tuple[str, ...]) -> dict[str, str]:
    # what a process has imported does not change under it, whatever pip does meanwhile
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    return versions


def git_commit(directory: str | os.PathLike = ".") -> str | None:
    """The commit checked out in ``directory``'s git working tree, if any."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(directory),
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def random_seed() -> int | None:
    """The seed set by ``lightning.seed_everything`` (it exports ``PL_GLOBAL_SEED``)."""
    value = os.environ.get("PL_GLOBAL_SEED")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def current_environment(prefetched: Future | None = None, frameworks: tuple[str, ...] = ()) -> RunEnvironment:
    """Read the environment of this process (runs ``git`` once).

    The software recorded is cnnprov, Python, torch when the process has imported it, and the
    ``frameworks`` that drive the run (``("lightning",)`` for ProvLogger): a plain loop is not
    said to have run with Lightning because it is installed.

    With ``prefetched`` (from :func:`prefetch_environment`), the slow parts come
    from that read; process id and seed are read now, as they may have changed.
    """
    if prefetched is not None:
        try:
            earlier = prefetched.result()
        except Exception:  # the background read failed: read again here
            earlier = None
        if earlier is not None:
            return replace(earlier, process_id=os.getpid(), random_seed=random_seed())
    return RunEnvironment(
        user=current_user(),
        hostname=socket.gethostname(),
        process_id=os.getpid(),
        software=software_versions(("cnnprov", *(("torch",) if "torch" in sys.modules else ()), *frameworks)),
        git_commit=git_commit(),
        random_seed=random_seed(),
    )


def prefetch_environment(frameworks: tuple[str, ...] = ()) -> Future:
    """Start reading the environment on a daemon thread; pass the result to :func:`current_environment`.

    ``git`` runs in a subprocess (a few ms): a logger starts this when it is
    made, so a run's start does not wait for it.
    """
    future: Future = Future()

    def read() -> None:
        try:
            future.set_result(current_environment(frameworks=frameworks))
        except BaseException as error:  # reported where the result is used
            future.set_exception(error)

    threading.Thread(target=read, name="cnnprov-environment", daemon=True).start()
    return future
