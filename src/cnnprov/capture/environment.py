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

from cnnprov.capture.host_facts import Machine, command_line, installed_packages, machine, recorded_variables
from cnnprov.capture.source_tree import SourceTree, source_tree


@dataclass(frozen=True)
class RunEnvironment:
    """Who ran the training, where, with which software and code."""

    user: str
    hostname: str
    process_id: int
    software: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    random_seed: int | None = None
    #: where and how it ran (read by :func:`current_environment`; empty when a caller builds one by hand)
    command_line: tuple[str, ...] = ()
    working_directory: str | None = None
    source: SourceTree | None = None
    packages: tuple[str, ...] = ()
    machine: Machine | None = None
    variables: dict[str, str] = field(default_factory=dict)


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


def working_directory() -> str | None:
    """The process's working directory (``None`` when it was removed under it)."""
    try:
        return os.getcwd()
    except OSError:
        return None


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
    """Read the environment of this process (runs ``git`` a few times; lists the installed packages).

    The software recorded is cnnprov, Python, torch when the process has imported it, and the
    ``frameworks`` that drive the run (``("lightning",)`` for ProvLogger): a plain loop is not
    said to have run with Lightning because it is installed.

    Also read: the command line (:func:`~cnnprov.capture.host_facts.command_line`) and working
    directory, the git working tree (:func:`~cnnprov.capture.source_tree.source_tree`), the installed
    packages, the machine and the environment variables of
    :data:`~cnnprov.capture.host_facts.RECORDED_VARIABLES`, and no others.

    With ``prefetched`` (from :func:`prefetch_environment`), the slow parts come
    from that read; process id, seed and recorded variables are read now, as they may have changed.
    """
    if prefetched is not None:
        try:
            earlier = prefetched.result()
        except Exception:  # the background read failed: read again here
            earlier = None
        if earlier is not None:
            return replace(
                earlier, process_id=os.getpid(), random_seed=random_seed(), variables=recorded_variables()
            )
    source = source_tree()
    return RunEnvironment(
        user=current_user(),
        hostname=socket.gethostname(),
        process_id=os.getpid(),
        software=software_versions(("cnnprov", *(("torch",) if "torch" in sys.modules else ()), *frameworks)),
        git_commit=source.commit if source is not None else git_commit(),
        random_seed=random_seed(),
        command_line=command_line(),
        working_directory=working_directory(),
        source=source,
        packages=installed_packages(),
        machine=machine(),
        variables=recorded_variables(),
    )


def prefetch_environment(frameworks: tuple[str, ...] = ()) -> Future:
    """Start reading the environment on a daemon thread; pass the result to :func:`current_environment`.

    ``git`` runs in subprocesses (a few ms each) and listing the installed packages reads each one's
    metadata (about 0.1 s for a hundred): a logger starts this when it is made, so a run's start
    does not wait for it.
    """
    future: Future = Future()

    def read() -> None:
        try:
            future.set_result(current_environment(frameworks=frameworks))
        except BaseException as error:  # reported where the result is used
            future.set_exception(error)

    threading.Thread(target=read, name="cnnprov-environment", daemon=True).start()
    return future
