"""What the tests share: tiny real training on scikit-learn's digits, and the command line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest

from cnnprov import ProvLogger
from cnnprov.demo import DigitsDataModule

HERE = Path(__file__).parent

#: Images used by tiny runs: enough for a few batches of 16.
TINY_LIMIT = 160


def tiny_trainer(root: Path, logger: ProvLogger | None = None, **overrides) -> L.Trainer:
    """A real Trainer that runs a few batches per epoch."""
    options = dict(
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=2,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    options.update(overrides)
    return L.Trainer(logger=logger, **options)


def tiny_data(**overrides) -> DigitsDataModule:
    options = dict(batch_size=16, limit=TINY_LIMIT)
    options.update(overrides)
    return DigitsDataModule(**options)


#: The ``cnnprov`` command, run by this interpreter.
CLI = [sys.executable, "-m", "cnnprov.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``$CNNPROV_STORE`` (tests name their stores), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "CNNPROV_STORE"}
    env.update(extra)
    return env


def cli(
    *args: object,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    command: Sequence[str] | None = None,
    text: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run ``cnnprov ARGS`` in a process of its own; its output is captured (as text unless ``text=False``)."""
    return subprocess.run(
        [*(command or CLI), *map(str, args)],
        capture_output=True,
        text=text,
        encoding="utf-8" if text else None,
        env=dict(env) if env is not None else cli_env(),
        cwd=cwd,
        timeout=timeout,
    )


def ok(*args: object, **options: object) -> str:
    """The output of a command that must succeed (and print no traceback)."""
    result = cli(*args, **options)  # type: ignore[arg-type]
    assert result.returncode == 0, f"cnnprov {' '.join(map(str, args))} failed:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def answers_on_both_engines(store, query: str, /, **params) -> tuple[list[tuple], list[tuple]]:
    """The rows of a bundled query on Oxigraph and on rdflib's own SPARQL engine, as Python values.

    Both run the same standard text (:meth:`cnnprov.ProvStore.query_text`: parameters in VALUES
    blocks); rdflib over an N-Quads export of the store in a ``Dataset`` whose default graph is
    the union of the run graphs. Columns in the query's projection order; floats rounded to 9
    places, so that values compare with a tight tolerance.
    """
    import contextlib

    import rdflib

    from cnnprov.rdf.vocab import python_value

    with store if store._held is None else contextlib.nullcontext():  # one open store for all three reads
        text = store.query_text(query, **params)
        with store.reading() as reader:
            solutions = reader.query(text, use_default_graph_as_union=True)
            columns = [variable.value for variable in solutions.variables]
            oxigraph = [tuple(_comparable(python_value(s[i])) for i in range(len(columns))) for s in solutions]
            del solutions  # it holds the store open
        export = store.export("nquads")
    dataset = rdflib.Dataset(default_union=True)
    dataset.parse(data=export, format="nquads")
    rows = dataset.query(text)
    other = [tuple(_comparable(_rdflib_value(row[c])) for c in columns) for row in rows]
    return oxigraph, other


def _rdflib_value(term):
    import rdflib

    if term is None or term == rdflib.RDF.nil:
        return None
    value = term.toPython()
    return str(value) if isinstance(value, rdflib.term.Identifier) else value


def _comparable(value):
    import decimal

    if isinstance(value, (float, decimal.Decimal)):
        return round(float(value), 9)
    return value


def as_multiset(rows: list[tuple]) -> dict[str, int]:
    """Rows as a multiset (order left out), each value with its type."""
    counts: dict[str, int] = {}
    for row in rows:
        key = repr(tuple((type(value).__name__, value) for value in row))
        counts[key] = counts.get(key, 0) + 1
    return counts


#: Whether the tests run as root (as CI does): some cases need it (mounting a small filesystem).
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def not_run(reason: str) -> None:
    """Report a case this machine cannot run; under CI (``$CI`` set), where it must run, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this case, but {reason}")
    pytest.skip(f"not run: {reason}")


@contextmanager
def tmpfs(where: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block (root only: reported as not run otherwise)."""
    where.mkdir()
    if not IS_ROOT:
        not_run("mounting a tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        not_run(f"this machine refuses to mount a tmpfs ({mounted.stderr.decode().strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


class PacedTraining:
    """A training subprocess that waits at each epoch start until the test lets it go on."""

    def __init__(self, store: Path, gate: Path, epochs: int) -> None:
        gate.mkdir()
        self.gate = gate
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "paced_training.py"), str(store), str(gate), str(epochs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def wait_for(self, line: str) -> None:
        for output in self.process.stdout:
            if output.strip() == line:
                return
        raise AssertionError(f"training ended before printing {line!r} (exit {self.process.wait()})")

    def release(self, epoch: int) -> None:
        (self.gate / f"go-{epoch}").touch()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def oxigraph_executable() -> str:
    beside = Path(sys.executable).with_name("oxigraph")
    found = str(beside) if beside.exists() else shutil.which("oxigraph")
    if not found:
        pytest.fail("the Oxigraph server is not installed: pip install 'cnnprov[test]'")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OxigraphServer:
    """``oxigraph serve`` on a free port of 127.0.0.1, its data in ``location``."""

    def __init__(self, location: Path) -> None:
        self.location = location
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> OxigraphServer:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [oxigraph_executable(), "serve", "--location", str(self.location), "--bind", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/query?query=ASK%7B%7D", timeout=2).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"oxigraph serve did not start on {self.url}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()
