"""A damaged write-ahead log: records a killed writer had stored durably and RocksDB then dropped
are reported, in one line, by every open; an undamaged store gives no such warning.

RocksDB replays its log (``*.log``) when a store opens and stops at the first damaged record
without a word. The run here is recorded by a real :class:`RunRecorder` in a process killed with
SIGKILL, so its records are in the log only, as a ``kill -9`` leaves them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyoxigraph as ox
import pytest

from cnnprov import ProvStore, RunRecorder
from cnnprov.storage.durable_notes import NOTES_FILE

from helpers import cli

EPOCHS = 20  # epochs 0-19 ended and durable when the process is killed, in epoch 20

KILLED_RUN = """
import sys, time
from cnnprov import RunRecorder

recorder = RunRecorder(sys.argv[1], name="wal", serve_reads=False)
recorder.start()
for epoch in range({epochs}):
    recorder.epoch_started(epoch)
    for step in range(epoch * 5, epoch * 5 + 5):
        recorder.log_metrics({{"train_loss": 1.0 / (step + 1), "epoch": epoch}}, step=step)
    recorder.log_metrics({{"val_acc": epoch / {epochs}, "epoch": epoch}}, step=epoch * 5 + 4)
    recorder.epoch_ended(epoch)
recorder.epoch_started({epochs})  # returns once epoch {last} is durable
print("DURABLE", flush=True)
time.sleep(600)  # killed here
"""

ENDED_EPOCHS = """
SELECT (COUNT(DISTINCT ?epoch) AS ?n) WHERE {
  GRAPH ?g { ?epoch a <https://w3id.org/cnnprov/ns#Epoch> ; <http://www.w3.org/ns/prov#endedAtTime> ?end }
}
"""


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """The store of a run SIGKILLed in epoch 20, its log not flushed. Read-only: tests copy it."""
    store = tmp_path_factory.mktemp("wal") / "provenance"
    script = textwrap.dedent(KILLED_RUN.format(epochs=EPOCHS, last=EPOCHS - 1))
    process = subprocess.Popen([sys.executable, "-c", script, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "DURABLE"
        deadline = time.monotonic() + 10  # the note is written on a thread of its own, just after
        while noted_index(store) != EPOCHS - 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert list(store.glob("*.log")), "the kill left the records in RocksDB's write-ahead log"
    return store


def noted_index(store: Path) -> int | None:
    try:
        (note,) = json.loads((store / NOTES_FILE).read_text())["runs"].values()
    except (OSError, ValueError, KeyError):
        return None
    return int(note["index"])


def ended_epochs(store: Path) -> int:
    """Epochs with an end, read the way RocksDB replays the log (read-only: nothing changes)."""
    (row,) = ox.Store.read_only(str(store)).query(ENDED_EPOCHS)
    return int(row["n"].value)


def copy_of(store: Path, tmp_path: Path) -> Path:
    target = tmp_path / "provenance"
    shutil.copytree(store, target)
    return target


def damaged_copy(store: Path, tmp_path: Path) -> Path:
    """A copy whose log has one byte flipped, two fifths in: RocksDB drops every record after it."""
    target = copy_of(store, tmp_path)
    log = max(target.glob("*.log"), key=lambda path: path.stat().st_size)
    data = bytearray(log.read_bytes())
    data[len(data) * 2 // 5] ^= 0xFF
    log.write_bytes(bytes(data))
    found = ended_epochs(target)
    assert 0 <= found < EPOCHS, "the damage is real: RocksDB dropped durable records without a word"
    return target


def loss_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "lost records of run" in line]


def test_cnnprov_runs_reports_records_a_damaged_log_lost_in_one_line(killed, tmp_path):
    path = damaged_copy(killed, tmp_path)
    result = cli("runs", "--store", path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = loss_lines(result.stderr)
    assert f"the provenance store '{path}' lost records of run 'wal'" in line
    assert f"epochs up to {EPOCHS - 1} had been stored" in line
    held = ended_epochs(path)
    assert (f"it holds epochs only up to {held - 1}" if held else "it holds none of them") in line
    assert f"cnnprov export --store {path}" in line
    assert list(path.glob("*.log")) and (path / NOTES_FILE).is_file()  # reading changed nothing


def test_provstore_reports_the_loss_once_in_one_line(killed, tmp_path, caplog):
    path = damaged_copy(killed, tmp_path)
    store = ProvStore(path)
    with caplog.at_level(logging.WARNING, logger="cnnprov"):
        store.runs()
        store.runs()  # said once a process, not at every read
    (record,) = [record for record in caplog.records if "lost records of run" in record.getMessage()]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "\n" not in record.getMessage() and str(path) in record.getMessage()


def record_small_run(path, name: str, epochs: int) -> None:
    """A run of ``epochs`` epochs, one value each, recorded to its end in ``path``."""
    recorder = RunRecorder(path, name=name, serve_reads=False)
    recorder.start()
    for epoch in range(epochs):
        recorder.epoch_started(epoch)
        recorder.log_metrics({"loss": 0.5, "epoch": epoch}, step=epoch)
        recorder.epoch_ended(epoch)
    recorder.finish("success")
    recorder.close(wait=True)


def test_training_into_a_store_whose_log_lost_records_warns_trains_and_keeps_saying_so(killed, tmp_path, caplog):
    path = damaged_copy(killed, tmp_path)
    with caplog.at_level(logging.WARNING, logger="cnnprov"):
        record_small_run(path, "next", epochs=2)
    (line,) = loss_lines(caplog.text)
    assert "lost records of run 'wal'" in line
    runs = {row["name"]: row for row in ProvStore(path).runs()}
    assert (runs["next"]["status"], runs["next"]["epochs"]) == ("success", 2)
    # the writer's open made the loss final (RocksDB wrote what it replayed to table files):
    # the note stays, so every later read says so too
    assert loss_lines(cli("runs", "--store", path).stderr)


def test_an_undamaged_killed_store_and_a_finished_one_give_no_warning(killed, tmp_path, caplog):
    path = copy_of(killed, tmp_path / "killed")
    assert ended_epochs(path) == EPOCHS
    result = cli("runs", "--store", path)
    assert result.returncode == 0 and "lost records" not in result.stderr, result.stderr
    with caplog.at_level(logging.WARNING, logger="cnnprov"):
        (run,) = ProvStore(path).runs().to_dicts()
    assert run["status"] == "crashed" and run["epochs"] >= EPOCHS  # epoch 20's start may be stored too

    finished = tmp_path / "finished"
    record_small_run(finished, "finished", epochs=3)
    assert not (finished / NOTES_FILE).exists()  # in table files now: the note has done its job
    result = cli("runs", "--store", finished)
    assert result.returncode == 0 and "lost records" not in result.stderr, result.stderr
    assert "lost records" not in caplog.text
