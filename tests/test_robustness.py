"""Lose nothing: killed, failing, resumed, distributed and locked runs, and hostile input.

Every test trains for real (or drives the framework-agnostic RunRecorder) into a
real store and asks the store what a user would ask, through SPARQL.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import enum
import json
import math
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from cnnprov import ProvLogger, ProvStore, RunRecorder
from cnnprov.analysis.provstore import QueryError
from cnnprov.capture.recorder import file_sha256
from cnnprov.demo import DigitsCNN
from cnnprov.errors import StoreError, StoreLockedError
from cnnprov.storage.advertisement import is_process_alive, read_holder
from cnnprov.storage.location import StoreLocation

from helpers import IS_ROOT, tiny_data, tiny_trainer, tmpfs

TESTS = Path(__file__).resolve().parent

PREFIXES = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX mls: <http://www.w3.org/ns/mls#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
"""


def ask(store: ProvStore | Path, query: str, **params) -> list[dict]:
    store = store if isinstance(store, ProvStore) else ProvStore(store)
    return store.sparql(PREFIXES + query, **params).to_dicts()


def epochs_of(store) -> list[dict]:
    """Every epoch with all its start and end times (two starts would show as two rows)."""
    return ask(
        store,
        """SELECT ?index ?start ?end WHERE { ?e a cnnprov:Epoch ; cnnprov:epochIndex ?index .
             OPTIONAL { ?e prov:startedAtTime ?start } OPTIONAL { ?e prov:endedAtTime ?end } }
           ORDER BY ?index ?start ?end""",
    )


def values_of(store, metric: str) -> list[dict]:
    """Every value of ``metric``: epoch-level entities, and the points of step-level series (read here)."""
    rows = ask(
        store,
        """SELECT ?metric ?value ?step ?epoch ?generator ?points WHERE { ?v mls:specifiedBy [ rdfs:label ?metric ] ;
             prov:wasGeneratedBy ?generator .
             { ?v mls:hasValue ?value OPTIONAL { ?v cnnprov:atStep ?step } } UNION { ?v cnnprov:seriesPoints ?points }
             OPTIONAL { ?v cnnprov:atEpoch ?epoch } }""",
        metric=metric,
    )
    values = []
    for row in rows:
        points = row.pop("points")
        if points is None:
            values.append(row)
            continue
        special = {"NaN": math.nan, "INF": math.inf, "-INF": -math.inf}
        for step, value, *_ in json.loads(points):
            values.append({**row, "value": special.get(value, value), "step": step})
    return sorted(values, key=lambda v: (v["epoch"] is not None, v["epoch"] or 0, v["step"] or 0))


def run_script(script: str, **kwargs) -> subprocess.Popen:
    """A Python subprocess that can import the test helpers."""
    prelude = f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(script)], **kwargs)


def wait_for_line(process: subprocess.Popen, marker: str, log: Path) -> str:
    for line in process.stdout:
        if line.startswith(marker):
            return line
    process.wait(timeout=60)
    raise AssertionError(f"the training process ended without printing {marker!r}:\n{log.read_text()[-3000:]}")


#: A process that holds a store and advertises nothing (only RocksDB knows of it).
SILENT_HOLDER = "import pyoxigraph; store = pyoxigraph.Store({path!r}); print('HOLDING', flush=True); sys.stdin.read()"


@contextmanager
def holding(script: str, log: Path) -> Iterator[subprocess.Popen]:
    """A subprocess that holds a store (it prints HOLDING) until the block ends and closes its stdin."""
    with open(log, "w") as stderr:
        holder = run_script(script, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            wait_for_line(holder, "HOLDING", log)
            yield holder
        finally:
            holder.stdin.close()
            holder.wait(timeout=60)


# ---------------------------------------------------------------------------
# 1. kill -9 in the middle of an epoch
# ---------------------------------------------------------------------------

KILLED_RUN = """
    import time
    from helpers import tiny_data, tiny_trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from cnnprov import ProvLogger
    from cnnprov.demo import DigitsCNN

    class Announces(DigitsCNN):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 2 and batch_idx == 2:
                print("EPOCH-2-UNDERWAY", self.trainer.logger.run_id, flush=True)
                time.sleep(600)  # killed here
            return super().training_step(batch, batch_idx)

    root = {root!r}
    every_epoch = ModelCheckpoint(dirpath=root + "/epochs", filename="{{epoch}}", save_top_k=-1)
    mid_epoch = ModelCheckpoint(
        dirpath=root + "/steps", filename="{{epoch}}-{{step}}", every_n_train_steps=10, save_top_k=-1
    )
    logger = ProvLogger(store=root + "/provenance", run_name="killed")
    trainer = tiny_trainer(root, logger, max_epochs=4, callbacks=[every_epoch, mid_epoch])
    trainer.fit(Announces(), datamodule=tiny_data())
"""


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict:
    """A 4-epoch run (4 batches an epoch) SIGKILLed at batch 2 of epoch 2, after a checkpoint at step 10.

    Read-only: tests that write copy the store first (:func:`copy_of`).
    """
    root = tmp_path_factory.mktemp("killed")
    log = root / "stderr.txt"
    with open(log, "w") as stderr:
        process = run_script(KILLED_RUN.format(root=str(root)), stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            line = wait_for_line(process, "EPOCH-2-UNDERWAY", log)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=60)  # collected: no zombie left to look alive
    assert process.returncode == -signal.SIGKILL
    return {"root": root, "store": root / "provenance", "run_id": line.split()[1], "pid": process.pid}


def copy_of(killed: dict, tmp_path: Path) -> Path:
    target = tmp_path / "provenance"
    shutil.copytree(killed["store"], target)
    return target


def test_kill_9_mid_epoch_keeps_every_flushed_epoch_and_the_store_opens(killed):
    store = ProvStore(killed["store"])
    # the killed writer's advertisement is left behind, and reads as stale
    info = read_holder(killed["store"])
    assert (info.pid, info.run_id, info.alive) == (killed["pid"], killed["run_id"], False)

    (run,) = store.runs().to_dicts()  # read as what it is: no process records it any more
    assert (run["run_id"], run["name"], run["status"], run["ended"]) == (killed["run_id"], "killed", "crashed", None)
    (recorded_status,) = ask(store, "SELECT ?s WHERE { ?r a cnnprov:TrainingRun ; cnnprov:status ?s }")
    assert recorded_status["s"] == "running"  # reading wrote nothing: the record says so until a writer comes

    # "running" but not in progress: the process that records it is gone
    (recorded,) = ask(
        store, "SELECT ?host ?pid WHERE { ?r a cnnprov:TrainingRun ; cnnprov:hostname ?host ; cnnprov:processId ?pid }"
    )
    assert recorded["pid"] == killed["pid"]
    assert is_process_alive(recorded["host"], recorded["pid"]) is False
    assert is_process_alive(socket.gethostname(), os.getpid()) is True  # a run in progress reads as alive
    assert is_process_alive("some-other-host", os.getpid()) is None  # cannot be checked from here

    # epochs 0 and 1 ended before the kill; epoch 2 was stored when its mid-epoch checkpoint was
    epochs = epochs_of(store)
    assert [(e["index"], e["end"] is not None) for e in epochs] == [(0, True), (1, True), (2, False)]
    assert [v["epoch"] for v in values_of(store, "val_acc")] == [0, 1]
    steps = [v["step"] for v in values_of(store, "train_loss_step") if v["epoch"] in (0, 1)]
    assert len(steps) == len(set(steps)) == 8  # every training step of epochs 0 and 1
    checkpoints = ask(store, "SELECT ?path WHERE { ?c a cnnprov:Checkpoint ; cnnprov:filePath ?path } ORDER BY ?path")
    assert [Path(c["path"]).name for c in checkpoints] == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2-step=10.ckpt"]


def test_the_next_run_uses_the_store_a_killed_process_left(killed, tmp_path):
    path = copy_of(killed, tmp_path)
    logger = ProvLogger(store=path, run_name="next")
    tiny_trainer(tmp_path, logger, max_epochs=1, enable_checkpointing=False).fit(DigitsCNN(), datamodule=tiny_data())
    runs = {row["name"]: row for row in ProvStore(path).runs()}
    assert (runs["killed"]["status"], runs["killed"]["epochs"]) == ("crashed", 3)
    assert (runs["next"]["status"], runs["next"]["epochs"]) == ("success", 1)
    # the next writer recorded it in the killed run's own graph, its end the time of its last record
    recorded = ask(
        path,
        f"""SELECT ?node ?status ?end ?last WHERE {{ ?node cnnprov:status ?status ; prov:endedAtTime ?end ;
             cnnprov:processId ?pid . FILTER (?pid = {killed["pid"]})
             {{ SELECT (MAX(?at) AS ?last) WHERE {{ ?v prov:generatedAtTime ?at ; cnnprov:atEpoch 2 }} }} }}""",
    )
    assert {row["status"] for row in recorded} == {"crashed"} and len(recorded) == 2  # the run and its attempt
    assert all(row["end"] >= row["last"] for row in recorded)
    exported = ProvStore(path).export("nquads", run=killed["run_id"]).decode()
    assert '"crashed"' in exported and '"running"' not in exported
    assert read_holder(path) is None  # the new run released the store and its advertisement


def test_a_stale_advertisement_is_not_named_as_the_holder_of_a_locked_store(killed, tmp_path):
    path = copy_of(killed, tmp_path)
    with (
        holding(SILENT_HOLDER.format(path=str(path)), tmp_path / "reader.txt"),
        pytest.raises(StoreLockedError) as raised,
    ):
        StoreLocation.parse(path, lock_wait_s=0.1).open_session(serve_reads=False)
    message = str(raised.value)
    assert f"not the advertised writer, process {killed['pid']}, which has ended" in message
    assert "in use by process" not in message


def test_resume_from_a_mid_epoch_checkpoint_continues_the_killed_run(killed, tmp_path):
    path = copy_of(killed, tmp_path)
    checkpoint = killed["root"] / "steps" / "epoch=2-step=10.ckpt"
    logger = ProvLogger(store=path, run_name="ignored: the run has a name")
    trainer = tiny_trainer(tmp_path, logger, max_epochs=4, enable_checkpointing=False)
    trainer.fit(DigitsCNN(), datamodule=tiny_data(), ckpt_path=str(checkpoint))

    assert logger.run_id == killed["run_id"] != logger.version
    store = ProvStore(path)
    (run,) = store.runs().to_dicts()
    assert (run["run_id"], run["name"], run["status"], run["epochs"]) == (killed["run_id"], "killed", "success", 4)

    attempts = ask(
        store,
        """SELECT ?index ?status ?pid ?start ?previous ?used WHERE { ?a a cnnprov:Attempt ; cnnprov:partOfRun ?run ;
             cnnprov:attemptIndex ?index ; cnnprov:status ?status ; cnnprov:processId ?pid ; prov:startedAtTime ?start .
             OPTIONAL { ?a prov:wasInformedBy [ cnnprov:attemptIndex ?previous ] }
             OPTIONAL { ?a prov:used [ a cnnprov:Checkpoint ; cnnprov:filePath ?used ] } } ORDER BY ?index""",
    )
    # the killed attempt was recorded as crashed by the process that resumed the run
    assert [(a["index"], a["status"], a["previous"]) for a in attempts] == [(1, "crashed", None), (2, "success", 1)]
    assert attempts[0]["pid"] == killed["pid"] and attempts[1]["pid"] == os.getpid()
    assert attempts[1]["used"] == str(checkpoint.resolve())
    (current,) = ask(store, "SELECT ?pid WHERE { ?r a cnnprov:TrainingRun ; cnnprov:processId ?pid }")
    assert current["pid"] == os.getpid()  # the run's process is its latest attempt's

    # one activity per epoch; epoch 2, begun by attempt 1, keeps that start and gets attempt 2's end
    epochs = epochs_of(store)
    assert [e["index"] for e in epochs] == [0, 1, 2, 3]
    assert all(e["start"] < e["end"] for e in epochs)
    assert epochs[2]["start"] < attempts[1]["start"] < epochs[2]["end"]
    assert [v["epoch"] for v in values_of(store, "val_acc")] == [0, 1, 2, 3]
    steps = [v["step"] for v in values_of(store, "train_loss_step")]
    assert len(steps) == len(set(steps))  # the resumed attempt goes on from step 10, repeating none
    reused = ask(store, "SELECT ?v WHERE { ?v mls:hasValue ?a , ?b . FILTER(?a != ?b) }")
    assert reused == []  # value IRIs continued after the stored ones


def test_resume_from_an_epoch_end_checkpoint_reruns_the_interrupted_epoch_as_one_activity(killed, tmp_path):
    path = copy_of(killed, tmp_path)
    checkpoint = killed["root"] / "epochs" / "epoch=1.ckpt"
    saves = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    logger = ProvLogger(store=path)
    tiny_trainer(tmp_path, logger, max_epochs=3, callbacks=[saves]).fit(
        DigitsCNN(), datamodule=tiny_data(), ckpt_path=str(checkpoint)
    )
    store = ProvStore(path)
    epochs = epochs_of(store)
    assert [e["index"] for e in epochs] == [0, 1, 2]  # epoch 2: one start (attempt 1's), one end (attempt 2's)
    assert [v["epoch"] for v in values_of(store, "val_acc")] == [0, 1, 2]
    # values attempt 1 logged in the abandoned part of epoch 2 stay recorded, before attempt 2 began
    (attempt_2,) = ask(store, "SELECT ?start WHERE { ?a cnnprov:attemptIndex 2 ; prov:startedAtTime ?start }")
    early = ask(
        store,
        """SELECT ?at WHERE { ?v mls:specifiedBy [ rdfs:label "train_loss_step" ] ; cnnprov:atEpoch 2 ;
             prov:generatedAtTime ?at }""",
    )
    assert sum(row["at"] < attempt_2["start"] for row in early) == 1
    # the checkpoints the resumed attempt wrote continue the chain from the one it resumed from
    chain = ask(
        store,
        """SELECT ?path ?from WHERE { ?c a cnnprov:Checkpoint ; cnnprov:filePath ?path ; prov:wasGeneratedBy ?epoch .
             ?epoch cnnprov:epochIndex 2 . OPTIONAL { ?c prov:wasDerivedFrom [ cnnprov:filePath ?from ] } }
           ORDER BY ?path""",
    )
    assert sorted((Path(c["path"]).name, Path(c["from"]).name) for c in chain) == [
        ("epoch=2-step=10.ckpt", "epoch=1.ckpt"),  # attempt 1, before it was killed
        ("epoch=2.ckpt", "epoch=1.ckpt"),  # attempt 2, from the checkpoint it resumed from
    ]


def test_a_checkpoint_no_stored_run_wrote_starts_a_new_run_that_used_it(killed, tmp_path):
    path = tmp_path / "provenance"  # a store that never saw the killed run
    checkpoint = killed["root"] / "epochs" / "epoch=1.ckpt"
    saves = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    logger = ProvLogger(store=path)
    tiny_trainer(tmp_path, logger, max_epochs=3, limit_train_batches=2, callbacks=[saves]).fit(
        DigitsCNN(), datamodule=tiny_data(), ckpt_path=str(checkpoint)
    )
    assert logger.run_id == logger.version != killed["run_id"]
    (used,) = ask(
        path,
        """SELECT ?path ?sha WHERE { ?a a cnnprov:Attempt ; prov:used ?c .
             ?c a cnnprov:Checkpoint ; cnnprov:filePath ?path ; cnnprov:sha256 ?sha }""",
    )
    assert (used["path"], used["sha"]) == (str(checkpoint.resolve()), file_sha256(checkpoint))
    (first,) = ask(
        path,
        """SELECT ?from WHERE { ?c prov:wasGeneratedBy [ cnnprov:epochIndex 2 ] ;
             prov:wasDerivedFrom [ cnnprov:filePath ?from ] }""",
    )
    assert first["from"] == used["path"]
    assert [e["index"] for e in epochs_of(path)] == [2]  # numbered as the checkpoint's epochs


KILLED_BEFORE_RECORDING = """
    import os, signal
    from helpers import tiny_data, tiny_trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from cnnprov import ProvLogger
    from cnnprov.demo import DigitsCNN

    class DiesBeforeRecording(ProvLogger):
        def after_save_checkpoint(self, checkpoint_callback):
            if self.experiment.last_epoch == 1:  # epoch 1's file is on disk, its record is not
                print("RUN", self.run_id, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            super().after_save_checkpoint(checkpoint_callback)

    root = {root!r}
    saves = ModelCheckpoint(dirpath=root + "/epochs", filename="{{epoch}}", save_top_k=-1)
    logger = DiesBeforeRecording(store=root + "/provenance")
    tiny_trainer(root, logger, max_epochs=4, callbacks=[saves]).fit(DigitsCNN(), datamodule=tiny_data())
"""


def test_a_checkpoint_whose_record_a_kill_prevented_still_leads_back_to_its_run(tmp_path):
    log = tmp_path / "training.log"
    with open(log, "w") as stderr:
        script = KILLED_BEFORE_RECORDING.format(root=str(tmp_path))
        process = run_script(script, stdout=subprocess.PIPE, stderr=stderr, text=True)
        line = wait_for_line(process, "RUN", log)
        assert process.wait(timeout=60) == -signal.SIGKILL
    run_id = line.split()[1]
    checkpoint = tmp_path / "epochs" / "epoch=1.ckpt"
    store_path = tmp_path / "provenance"
    assert not ask(store_path, "SELECT ?c WHERE { ?c cnnprov:sha256 ?sha }", sha=file_sha256(checkpoint))
    logger = ProvLogger(store=store_path)
    trainer = tiny_trainer(tmp_path, logger, max_epochs=3)
    trainer.fit(DigitsCNN(), datamodule=tiny_data(), ckpt_path=str(checkpoint))
    assert logger.run_id == run_id  # the checkpoint named its run: continued, not forked
    (run,) = ProvStore(store_path).runs().to_dicts()
    assert (run["run_id"], run["status"], run["epochs"]) == (run_id, "success", 3)
    (used,) = ask(
        store_path,
        """SELECT ?index ?by WHERE { ?a a cnnprov:Attempt ; cnnprov:attemptIndex ?index ; prov:used ?c .
             ?c cnnprov:sha256 ?sha ; prov:wasGeneratedBy ?by }""",
        sha=file_sha256(checkpoint),
    )
    assert used["index"] == 2 and used["by"].endswith(f"/run-{run_id}")
    (role,) = ask(
        store_path,
        "SELECT ?role WHERE { ?a prov:qualifiedUsage [ prov:entity ?c ; prov:hadRole ?role ] ."
        " ?c cnnprov:sha256 ?sha }",
        sha=file_sha256(checkpoint),
    )
    assert role["role"] == "https://w3id.org/cnnprov/ns#resumedCheckpoint"  # the usage says what it was used as


class WatchesItsLastBatchCheckpoint(DigitsCNN):
    """In epoch 0's validation, waits (up to 10 s) for the store to hold the checkpoint its last batch saved."""

    def __init__(self, store: Path, checkpoint: Path) -> None:
        super().__init__()
        self.store, self.checkpoint, self.seconds_to_record = store, checkpoint, None

    def validation_step(self, batch, batch_idx):
        if not self.trainer.sanity_checking and self.current_epoch == 0 and self.seconds_to_record is None:
            started, sha = time.monotonic(), file_sha256(self.checkpoint)
            while time.monotonic() - started < 10:
                if ask(self.store, "SELECT ?c WHERE { ?c cnnprov:sha256 ?sha }", sha=sha):
                    self.seconds_to_record = time.monotonic() - started
                    break
                time.sleep(0.02)
            else:
                self.seconds_to_record = math.inf
        return super().validation_step(batch, batch_idx)


def test_a_checkpoint_saved_by_the_last_batch_is_in_the_store_before_the_validation_after_it_ends(tmp_path):
    # the epoch's end, which the next epoch start waits for, comes after this validation: a kill
    # during it (a long one, a preemption) must not take the checkpoint's record with it
    store = tmp_path / "provenance"
    steps = ModelCheckpoint(dirpath=tmp_path / "steps", filename="{step}", every_n_train_steps=4, save_top_k=-1)
    model = WatchesItsLastBatchCheckpoint(store, tmp_path / "steps" / "step=4.ckpt")  # 4 batches an epoch
    trainer = tiny_trainer(tmp_path, ProvLogger(store=store), max_epochs=1, callbacks=[steps])
    trainer.fit(model, datamodule=tiny_data())
    assert model.seconds_to_record is not None and model.seconds_to_record < 10


# ---------------------------------------------------------------------------
# 2. failures: an exception, and Ctrl+C (KeyboardInterrupt)
# ---------------------------------------------------------------------------


class FailsInEpochOne(DigitsCNN):
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 2:
            raise ValueError("loss exploded: 'nan' at step 6")
        return super().training_step(batch, batch_idx)


def test_an_exception_fails_the_run_keeps_what_came_before_and_a_new_logger_resumes_it(tmp_path):
    path = tmp_path / "provenance"
    saves = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    failing = ProvLogger(store=path, run_name="fails")
    with pytest.raises(ValueError, match="loss exploded"):
        tiny_trainer(tmp_path, failing, max_epochs=3, callbacks=[saves]).fit(FailsInEpochOne(), datamodule=tiny_data())
    (run,) = ask(
        path,
        """SELECT ?status ?type ?message ?end WHERE { ?r a cnnprov:TrainingRun ; cnnprov:status ?status ;
             cnnprov:errorType ?type ; cnnprov:errorMessage ?message ; prov:endedAtTime ?end }""",
    )
    assert (run["status"], run["type"], run["message"]) == ("failed", "ValueError", "loss exploded: 'nan' at step 6")
    assert [(e["index"], e["end"] is not None) for e in epochs_of(path)] == [(0, True), (1, True)]
    # the two steps of epoch 1 before the failure were flushed with the failure
    assert [v["step"] for v in values_of(path, "train_loss_step") if v["epoch"] == 1] == [4, 5]

    # a new logger in the same process resumes from epoch 0's checkpoint and continues the same run
    resumed = ProvLogger(store=path)
    saves = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    tiny_trainer(tmp_path, resumed, max_epochs=3, callbacks=[saves]).fit(
        DigitsCNN(), datamodule=tiny_data(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt")
    )
    assert resumed.run_id == failing.run_id
    (run,) = ProvStore(path).runs().to_dicts()
    assert (run["status"], run["epochs"]) == ("success", 3)
    assert ask(path, "SELECT ?t WHERE { ?r a cnnprov:TrainingRun ; cnnprov:errorType ?t }") == []
    attempts = ask(
        path,
        """SELECT ?index ?status ?type WHERE { ?a a cnnprov:Attempt ; cnnprov:attemptIndex ?index ;
             cnnprov:status ?status . OPTIONAL { ?a cnnprov:errorType ?type } } ORDER BY ?index""",
    )
    assert [(a["index"], a["status"], a["type"]) for a in attempts] == [
        (1, "failed", "ValueError"),
        (2, "success", None),
    ]
    epochs = epochs_of(path)
    assert [e["index"] for e in epochs] == [0, 1, 2]  # epoch 1, failed and re-run: one start, one end
    assert [v["epoch"] for v in values_of(path, "val_acc")] == [0, 1, 2]


INTERRUPTED_RUN = """
    from helpers import tiny_data, tiny_trainer
    from cnnprov import ProvLogger
    from cnnprov.demo import DigitsCNN

    class PressesCtrlC(DigitsCNN):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1 and batch_idx == 2:
                raise KeyboardInterrupt("stopped by the user")
            return super().training_step(batch, batch_idx)

    logger = ProvLogger(store={store!r}, run_name="interrupted")
    tiny_trainer({root!r}, logger, max_epochs=3, enable_checkpointing=False).fit(PressesCtrlC(), datamodule=tiny_data())
    print("fit returned")  # Lightning exits with status 1 instead
"""


def test_keyboard_interrupt_fails_the_run_and_keeps_what_came_before(tmp_path):
    path = tmp_path / "provenance"
    process = run_script(
        INTERRUPTED_RUN.format(store=str(path), root=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err[-3000:]
    assert "fit returned" not in out
    (run,) = ask(
        path,
        """SELECT ?status ?type ?message ?end WHERE { ?r a cnnprov:TrainingRun ; cnnprov:status ?status ;
             cnnprov:errorType ?type ; cnnprov:errorMessage ?message ; prov:endedAtTime ?end }""",
    )
    assert (run["status"], run["type"], run["message"]) == ("failed", "KeyboardInterrupt", "stopped by the user")
    assert [(e["index"], e["end"] is not None) for e in epochs_of(path)] == [(0, True), (1, True)]
    assert [v["epoch"] for v in values_of(path, "val_acc")] == [0]
    assert [v["step"] for v in values_of(path, "train_loss_step")] == [0, 1, 2, 3, 4, 5]
    assert read_holder(path) is None  # released on the way out


# ---------------------------------------------------------------------------
# 4. distributed training, and several stages with one logger
# ---------------------------------------------------------------------------


class RankPids(Callback):
    """Writes each rank's process id to ``folder/rank-{global_rank}``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_start(self, trainer, pl_module) -> None:
        (self.folder / f"rank-{trainer.global_rank}").write_text(str(os.getpid()))


def test_ddp_spawn_records_one_run_written_by_global_rank_zero(tmp_path):
    path = tmp_path / "provenance"
    logger = ProvLogger(store=path, run_name="ddp")
    trainer = tiny_trainer(
        tmp_path, logger, max_epochs=2, limit_train_batches=2, limit_val_batches=1,
        strategy="ddp_spawn", devices=2, callbacks=[RankPids(tmp_path)],
    )  # fmt: skip
    trainer.fit(DigitsCNN(), datamodule=tiny_data())
    ranks = {name: int((tmp_path / name).read_text()) for name in ("rank-0", "rank-1")}
    assert len({*ranks.values(), os.getpid()}) == 3

    store = ProvStore(path)
    (run,) = store.runs().to_dicts()
    assert (run["run_id"], run["status"], run["epochs"]) == (logger.run_id, "success", 2)
    writers = ask(store, "SELECT DISTINCT ?pid WHERE { ?activity cnnprov:processId ?pid }")
    assert [w["pid"] for w in writers] == [ranks["rank-0"]]
    steps = [(v["step"], v["epoch"]) for v in values_of(store, "train_loss_step")]
    assert steps == [(0, 0), (1, 0), (2, 1), (3, 1)]  # once each: rank 1 recorded nothing
    assert logger._recorder is None  # the main process never opened the store


def test_the_logger_pickles_without_its_store(tmp_path):
    path = tmp_path / "provenance"
    logger = ProvLogger(store=path)
    logger.log_metrics({"loss": 0.5}, step=0)
    assert logger.experiment.started
    copy = pickle.loads(pickle.dumps(logger))
    assert copy._recorder is None and (copy.run_id, copy.version) == (logger.run_id, logger.version)
    logger.finalize("success")
    (value,) = values_of(path, "loss")
    assert value["value"] == 0.5


def test_two_fits_with_one_logger_continue_the_run_and_its_epochs(tmp_path):
    path = tmp_path / "provenance"
    logger = ProvLogger(store=path)
    model = DigitsCNN()
    for _ in range(2):  # a new Trainer counts epochs from 0 again; the run goes on at 2
        tiny_trainer(tmp_path, logger, max_epochs=2, limit_train_batches=2, enable_checkpointing=False).fit(
            model, datamodule=tiny_data()
        )
    store = ProvStore(path)
    (run,) = store.runs().to_dicts()
    assert (run["run_id"], run["status"], run["epochs"]) == (logger.run_id, "success", 4)
    chain = ask(
        store,
        """SELECT ?index ?previous WHERE { ?e a cnnprov:Epoch ; cnnprov:epochIndex ?index .
             OPTIONAL { ?e prov:wasInformedBy [ cnnprov:epochIndex ?previous ] } } ORDER BY ?index""",
    )
    assert [(c["index"], c["previous"]) for c in chain] == [(0, None), (1, 0), (2, 1), (3, 2)]
    assert [e["index"] for e in epochs_of(store)] == [0, 1, 2, 3]  # one start and one end each
    produced = ask(
        store,
        """SELECT ?at ?index WHERE { ?v mls:specifiedBy [ rdfs:label "val_acc" ] ; cnnprov:atEpoch ?at ;
             prov:wasGeneratedBy [ cnnprov:epochIndex ?index ] } ORDER BY ?at""",
    )
    assert [(p["at"], p["index"]) for p in produced] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert len(ask(store, "SELECT ?a WHERE { ?a a cnnprov:Attempt }")) == 1  # one logger, one attempt


def test_fit_then_test_attributes_test_metrics_to_the_run_not_an_epoch(tmp_path):
    path = tmp_path / "provenance"
    logger = ProvLogger(store=path)
    trainer = tiny_trainer(tmp_path, logger, max_epochs=2, limit_train_batches=2, enable_checkpointing=False)
    model, data = DigitsCNN(), tiny_data()
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data)
    store = ProvStore(path)
    (run,) = store.runs().to_dicts()
    assert (run["status"], run["epochs"]) == ("success", 2)
    (test_acc,) = values_of(store, "test_acc")
    assert test_acc["epoch"] is None
    assert test_acc["generator"].endswith(f"/run-{logger.run_id}")
    roles = ask(store, "SELECT ?role WHERE { ?r prov:used [ cnnprov:dataRole ?role ] } ORDER BY ?role")
    assert [r["role"] for r in roles] == ["test", "train", "validation"]


# ---------------------------------------------------------------------------
# 5. a store another process holds
# ---------------------------------------------------------------------------

HOLDER = """
    from cnnprov.storage.location import StoreLocation
    session = StoreLocation.parse({store!r}).open_session(serve_reads=False)
    session.target("holder-run")
    print("HOLDING", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


class CountsSteps(DigitsCNN):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0  # of this model: no test depends on another's

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return super().training_step(batch, batch_idx)


def test_a_second_writer_fails_at_the_start_of_fit_with_one_clear_message(tmp_path):
    path = tmp_path / "provenance"
    with holding(HOLDER.format(store=str(path)), tmp_path / "holder.txt") as holder:
        trainer = tiny_trainer(tmp_path, ProvLogger(store=path), max_epochs=1, enable_checkpointing=False)
        model = CountsSteps()
        with pytest.raises(StoreLockedError) as raised:
            trainer.fit(model, datamodule=tiny_data())
    message = str(raised.value)
    assert f"in use by process {holder.pid} on {socket.gethostname()} (run holder-run)" in message
    assert "ProvLogger(store='other-dir')" in message  # what to do instead
    assert "IO error" not in message and "LOCK" not in message  # not RocksDB's words
    assert model.steps == 0  # it failed before training
    # once the holder is gone, the same store takes the run
    tiny_trainer(tmp_path, ProvLogger(store=path), max_epochs=1, enable_checkpointing=False).fit(
        CountsSteps(), datamodule=tiny_data()
    )
    assert ProvStore(path).runs().column("status") == ["success"]


def test_a_holder_that_does_not_advertise_itself_stops_fit_by_the_second_epoch(tmp_path):
    """The store opens in the background; a holder only RocksDB knows of is found when it fails."""
    path = tmp_path / "provenance"
    with holding(SILENT_HOLDER.format(path=str(path)), tmp_path / "holder.txt"):
        trainer = tiny_trainer(tmp_path, ProvLogger(store=path), max_epochs=3, enable_checkpointing=False)
        model = CountsSteps()
        with pytest.raises(StoreLockedError) as raised:
            trainer.fit(model, datamodule=tiny_data())
    assert "is in use by another process" in str(raised.value)
    assert model.steps <= 4  # at most the first epoch (4 batches) trained


# ---------------------------------------------------------------------------
# 6. hostile input
# ---------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Config:
    width: int = 8
    activation: str = "relu"


class Broken:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class BrokenRepr(Broken):
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Hostile:
    """Answers every attribute lookup with an exception."""

    def __getattr__(self, name: str):
        raise RuntimeError(f"no {name}")

    def __str__(self) -> str:
        return "hostile"


def scaled(x: float) -> float:
    return 2 * x


def _self_containing() -> list:
    items: list = [1]
    items.append(items)
    return items


def _deep(levels: int) -> dict:
    nested: dict = {"leaf": 1}
    for _ in range(levels):
        nested = {"a": nested}
    return nested


NAN = float("nan")
LONG = "x" * 9_999 + "ü"
IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
AWARE = datetime.datetime(2024, 5, 17, 13, 45, 30, 250000, tzinfo=IST)

#: (hyperparameters logged under ``h``, expected {path: value}); values compare with their type.
HYPERPARAMETERS = {
    "none": (None, {"h": None}),
    "nested-dict": ({"a": {"b": {"c": 1}}}, {"h.a.b.c": 1}),
    "empty-dict": ({}, {"h": "{}"}),
    "list": ([1, 2.5, "x", None, True], {"h": '[1, 2.5, "x", null, true]'}),
    "tuple": ((1, (2, 3)), {"h": "[1, [2, 3]]"}),
    "set": ({3, 1, 2}, {"h": "[1, 2, 3]"}),
    "list-containing-itself": (_self_containing(), {"h": "[1, [...]]"}),
    "namespace": (argparse.Namespace(lr=0.1, depth=3), {"h.lr": 0.1, "h.depth": 3}),
    "dataclass": (Config(), {"h.width": 8, "h.activation": "relu"}),
    "enum": (Color.RED, {"h": "Color.RED"}),
    "int-enum": (Level.HIGH, {"h": "Level.HIGH"}),
    "path": (Path("/data/my set/#1"), {"h": "/data/my set/#1"}),
    "torch-dtype": (torch.float16, {"h": "torch.float16"}),
    "torch-device": (torch.device("cpu"), {"h": "cpu"}),
    "scalar-tensor": (torch.tensor(0.5), {"h": 0.5}),
    "int-tensor": (torch.tensor(7), {"h": 7}),
    "matrix-tensor": (torch.tensor([[1, 2], [3, 4]]), {"h": "[[1, 2], [3, 4]]"}),
    "numpy-float": (np.float32(0.25), {"h": 0.25}),
    "numpy-float32-tenth": (np.float32(0.1), {"h": 0.1}),  # not the 0.10000000149011612 it widens to
    "float32-tensor-tenth": (torch.tensor(0.1), {"h": 0.1}),
    "float16-third": (np.float16(1 / 3), {"h": 0.3333}),
    "numpy-float64-tenth": (np.float64(0.1), {"h": 0.1}),
    "numpy-int": (np.int64(-3), {"h": -3}),
    "numpy-bool": (np.bool_(False), {"h": False}),
    "numpy-array": (np.array([1.5, 2.5]), {"h": "[1.5, 2.5]"}),
    "module": (torch.nn.Linear(2, 3), {"h": "Linear(in_features=2, out_features=3, bias=True)"}),
    "function": (scaled, {"h": f"{__name__}.scaled"}),
    "class": (torch.nn.ReLU, {"h": "torch.nn.modules.activation.ReLU"}),
    "builtin": (len, {"h": "builtins.len"}),
    "10k-string": (LONG, {"h": LONG}),
    "nul-and-controls": ("a\x00b\tc\nd\x7f", {"h": "a\x00b\tc\nd\x7f"}),
    "lone-surrogate": ("x\ud800y", {"h": "x\\ud800y"}),
    "nan": (NAN, {"h": NAN}),
    "inf": (math.inf, {"h": math.inf}),
    "minus-inf": (-math.inf, {"h": -math.inf}),
    "huge-int": (2**80, {"h": 2**80}),
    "aware-datetime": (AWARE, {"h": AWARE}),
    "bytes": (b"\x00\xff", {"h": "b'\\x00\\xff'"}),
    "complex": (1 + 2j, {"h": "(1+2j)"}),
    "broken-str": (Broken(), {"h": "<unprintable Broken>"}),
    "set-of-broken-repr": ({BrokenRepr()}, {"h": '["<unprintable BrokenRepr>"]'}),
    "naive-datetime-min": (datetime.datetime.min, {"h": "0001-01-01T00:00:00"}),
    "hostile-getattr": (Hostile(), {"h": "hostile"}),
    "deep-nesting": (_deep(12), {"h." + ".".join(["a"] * 8): str(_deep(4))}),
    "non-string-keys": ({1: "one", (2, 3): "pair"}, {"h.1": "one", "h.(2, 3)": "pair"}),
}
KEYS = {  # hyperparameter names: logged as {key: 0.5}
    "unicode-key": "学习率 λ",
    "key-with-spaces": "learning rate",
    "key-with-slashes": "optimizer/lr/../x",
    "key-with-hash": "lr#1",
    "key-with-quotes": "it's \"the\" lr",
    "key-with-sparql": '"> } ; DROP ALL ; #',
    "empty-key": "",
    "dot-key": "..",
}
METRICS = {  # (metrics, step)
    "unicode-metric": ({"精度 ✓": 0.5}, 3),
    "metric-with-spaces": ({"val loss": 0.5}, 3),
    "metric-with-slashes": ({"train/loss/../x": 0.5}, 3),
    "metric-with-quotes-and-hash": ({"a \"b\" #c <d>": 0.5}, 3),
    "nan-and-infinities": ({"nan": NAN, "inf": math.inf, "-inf": -math.inf}, 3),
    "step-none": ({"loss": 0.5}, None),
    "tensor-value": ({"loss": torch.tensor(0.25)}, 3),
}


def _same(actual, expected) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    return type(actual) is type(expected) and actual == expected


def _record(path: Path, hyperparameters=None, metrics=None, step=None) -> None:
    recorder = RunRecorder(path, name="hostile", serve_reads=False)  # these cases are about what is written
    recorder.start()
    recorder.log_hyperparameters({"sentinel": 7})
    recorder.epoch_started(0)
    recorder.log_metrics({"sentinel_metric": 1.5, "epoch": 0}, step=0)
    recorder.epoch_ended(0)
    recorder.flush()
    try:
        if hyperparameters is not None:
            recorder.log_hyperparameters(hyperparameters)
        if metrics is not None:
            recorder.log_metrics(metrics, step)
    finally:
        recorder.finish()
        recorder.close()


def _settings(path: Path) -> dict:
    rows = ask(
        path,
        """SELECT ?name ?value WHERE { ?run a cnnprov:TrainingRun ; prov:used ?s .
             ?s a mls:HyperParameterSetting ; mls:specifiedBy [ rdfs:label ?name ] .
             OPTIONAL { ?s mls:hasValue ?value } }""",  # a setting of None has no value
    )
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), "a setting recorded two values"
    return {row["name"]: row["value"] for row in rows}


CASES = (
    [pytest.param("hyperparameter", {"h": value}, want, id=name) for name, (value, want) in HYPERPARAMETERS.items()]
    + [pytest.param("hyperparameter", {key: 0.5}, {key: 0.5}, id=name) for name, key in KEYS.items()]
    + [pytest.param("metric", metrics, step, id=name) for name, (metrics, step) in METRICS.items()]
)


@pytest.mark.parametrize("kind, given, expected", CASES)
def test_hostile_input_is_recorded_as_itself_and_loses_nothing(tmp_path, kind, given, expected):
    path = tmp_path / "provenance"
    if kind == "hyperparameter":
        _record(path, hyperparameters=given)
    else:
        _record(path, metrics=given, step=expected)
    settings = _settings(path)
    assert settings.pop("sentinel") == 7  # what was recorded before is still there
    assert [v["value"] for v in values_of(path, "sentinel_metric")] == [1.5]
    (run,) = ProvStore(path).runs().to_dicts()
    assert (run["status"], run["epochs"]) == ("success", 1)
    if kind == "hyperparameter":
        assert set(settings) == set(expected)
        for name, value in expected.items():
            assert _same(settings[name], value), (name, settings[name], value)
        return
    for name, value in given.items():
        (row,) = values_of(path, name)
        assert _same(row["value"], float(value)), (name, row["value"])
        assert row["step"] == expected


#: log_metrics calls that cannot be recorded as given, each between good ones: (metrics, step,
#: the measure it is recorded under and what is recorded of it as (value, step, epoch), or None).
POISONED = {
    "epoch-nan": ({"loss": 0.5, "epoch": NAN}, 1, "loss", (0.5, 1, None)),
    "epoch-inf": ({"loss": 0.5, "epoch": math.inf}, 1, "loss", (0.5, 1, None)),
    "epoch-text": ({"loss": 0.5, "epoch": "zero"}, 1, "loss", (0.5, 1, None)),
    "epoch-fraction": ({"loss": 0.5, "epoch": 0.9}, 1, "loss", (0.5, 1, None)),
    "step-nan": ({"loss": 0.5, "epoch": 0}, NAN, "loss", (0.5, None, 0)),
    "step-text": ({"loss": 0.5, "epoch": 0}, "one", "loss", (0.5, None, 0)),
    "step-fraction": ({"loss": 0.5, "epoch": 0}, 1.5, "loss", (0.5, None, 0)),
    "value-too-large": ({"loss": 10**400, "epoch": 0}, 1, "loss", None),
    "value-text": ({"loss": "high", "epoch": 0}, 1, "loss", None),
    "key-broken": ({Broken(): 0.5, "epoch": 0}, 1, "<unprintable Broken>", (0.5, 1, 0)),
}


@pytest.mark.parametrize("metrics, step, measure, recorded", POISONED.values(), ids=POISONED.keys())
def test_a_poisoned_value_is_recorded_as_well_as_it_can_be_and_harms_no_other_record(
    tmp_path, caplog, metrics, step, measure, recorded
):
    path = tmp_path / "provenance"
    recorder = RunRecorder(path, name="poisoned", serve_reads=False)
    recorder.start()
    recorder.epoch_started(0)
    recorder.log_metrics({"good": 1.0, "epoch": 0}, step=0)
    recorder.log_metrics(metrics, step)
    recorder.log_metrics({"good": 2.0, "epoch": 0}, step=2)
    recorder.epoch_ended(0)
    recorder.epoch_started(1)
    for later in range(3, 6):  # what comes after it, in the same batch and later ones, is stored
        recorder.log_metrics({"good": float(later), "epoch": 1}, step=later)
    recorder.finish()  # no error: the run ends as it went
    recorder.close()
    assert [(v["value"], v["step"], v["epoch"]) for v in values_of(path, "good")] == [
        (1.0, 0, 0), (2.0, 2, 0), (3.0, 3, 1), (4.0, 4, 1), (5.0, 5, 1)
    ]
    (run,) = ProvStore(path).runs().to_dicts()
    assert (run["status"], run["epochs"]) == ("success", 2)
    assert [(v["value"], v["step"], v["epoch"]) for v in values_of(path, measure)] == ([recorded] if recorded else [])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1, warned  # said once, naming what could not be recorded
    assert "cannot record" in warned[0]


class HostileHyperparameters(DigitsCNN):
    """A LightningModule whose hyperparameters and metric names are awkward, trained by a real Trainer."""

    def __init__(self, config, names, device, dtype, schedule, weights, when) -> None:
        super().__init__()
        self.save_hyperparameters()

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        self.log("val/acc ü", 0.75)
        self.log("nan metric", float("nan"))
        self.log("∞", float("inf"))


def test_a_real_trainer_records_hostile_hyperparameters_and_metric_names(tmp_path):
    path = tmp_path / "provenance"
    model = HostileHyperparameters(
        config=argparse.Namespace(depth=3, act=Color.RED, path=Path("/a b")),
        names={"学习率": 0.1, "a/b #c": "q\"uote"},
        device=torch.device("cpu"),
        dtype=torch.float64,
        schedule=(1, 2, 3),
        weights=torch.tensor([0.25, 0.75]),
        when=AWARE,
    )
    tiny_trainer(tmp_path, ProvLogger(store=path), max_epochs=1, limit_train_batches=2, enable_checkpointing=False).fit(
        model, datamodule=tiny_data()
    )
    settings = _settings(path)
    expected = {
        "config.depth": 3, "config.act": "Color.RED", "config.path": "/a b", "names.学习率": 0.1,
        "names.a/b #c": 'q"uote', "device": "cpu", "dtype": "torch.float64", "schedule": "[1, 2, 3]",
        "weights": "[0.25, 0.75]", "when": AWARE, "batch_size": 16,
    }  # fmt: skip
    for name, value in expected.items():
        assert _same(settings[name], value), (name, settings[name])
    assert [v["value"] for v in values_of(path, "val/acc ü")] == [0.75]
    assert math.isnan(values_of(path, "nan metric")[0]["value"])
    assert values_of(path, "∞")[0]["value"] == math.inf


def _file(tmp: Path, stack: ExitStack) -> Path:
    (tmp / "notes.txt").write_text("keep me")
    return tmp / "notes.txt"


def _under_a_file(tmp: Path, stack: ExitStack) -> Path:
    return _file(tmp, stack) / "provenance"  # fails for root too: no directory can be made inside a file


def _foreign_directory(tmp: Path, stack: ExitStack) -> Path:
    (tmp / "data").mkdir()
    (tmp / "data" / "notes.txt").write_text("keep me")
    return tmp / "data"


def _read_only(tmp: Path, stack: ExitStack) -> Path:
    if IS_ROOT:  # root writes into any directory whatever its mode: a read-only filesystem stops it too
        locked = stack.enter_context(tmpfs(tmp / "locked"))
        subprocess.run(["mount", "-o", "remount,ro", str(locked)], check=True)
    else:
        (tmp / "locked").mkdir(mode=0o555)
    return tmp / "locked" / "provenance"


@pytest.mark.parametrize(
    "make_path, message",
    [
        pytest.param(_file, "it is a file, not a directory", id="a-file"),
        pytest.param(_under_a_file, "notes.txt' is a file, not a directory", id="under-a-file"),
        pytest.param(_foreign_directory, "the directory holds other files", id="a-foreign-directory"),
        pytest.param(_read_only, "is not writable", id="read-only-parent"),
        pytest.param(lambda tmp, stack: tmp / "missing" / "parents" / "provenance", None, id="missing-parents"),
    ],
)  # fmt: skip
def test_a_store_path_gives_a_store_or_one_clear_error_and_touches_nothing(tmp_path, make_path, message):
    with ExitStack() as stack:
        _a_store_path_gives_a_store_or_one_clear_error(tmp_path, make_path(tmp_path, stack), message)


def _a_store_path_gives_a_store_or_one_clear_error(tmp_path: Path, path: Path, message: str | None) -> None:
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    logger = ProvLogger(store=path)
    trainer = tiny_trainer(tmp_path / "root", logger, max_epochs=1, limit_train_batches=1, enable_checkpointing=False)
    if message is None:  # a missing parent is created
        trainer.fit(DigitsCNN(), datamodule=tiny_data())
        assert ProvStore(path).runs().column("status") == ["success"]
        return
    with pytest.raises(StoreError, match=message) as raised:
        trainer.fit(DigitsCNN(), datamodule=tiny_data())
    assert "IO error" not in str(raised.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "root" not in p.parts} == before


@pytest.fixture(scope="module")
def injected(tmp_path_factory) -> Path:
    """A store with one run whose metric name is itself SPARQL syntax with quotes."""
    path = tmp_path_factory.mktemp("injection") / "provenance"
    recorder = RunRecorder(path, name="injection")
    recorder.start()
    recorder.epoch_started(0)
    recorder.log_metrics({'x" } } ; DROP ALL ; #': 0.5, "val_acc": 0.9, "epoch": 0}, step=0)
    recorder.epoch_ended(0)
    recorder.finish()
    recorder.close()
    return path


def _quad_count(path: Path) -> int:
    return ask(path, "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }")[0]["n"]


INJECTIONS = [
    pytest.param("sparql", "SELECT ?s WHERE { ?s ?p ", id="malformed-sparql"),
    pytest.param("sparql", "DROP ALL", id="an-update-as-a-query"),
    pytest.param("sparql", "DELETE WHERE { ?s ?p ?o }", id="delete-as-a-query"),
    pytest.param("cli", 'metric=val_acc" } } ; DROP ALL ; #', id="cli-param-with-sparql"),
    pytest.param("cli", 'metric=x" } } ; DROP ALL ; #', id="cli-param-naming-a-metric-with-sparql"),
    pytest.param("api", '"> } DELETE WHERE { ?s ?p ?o } #', id="api-binding-with-sparql"),
]


@pytest.mark.parametrize("route, text", INJECTIONS)
def test_queries_cannot_change_the_store_and_bind_values_literally(injected, route, text, capsys):
    from cnnprov.cli import main

    before = _quad_count(injected)
    if route == "sparql":
        with pytest.raises(QueryError, match=r"not valid SPARQL|not a SELECT"):
            ProvStore(injected).sparql(text)
    elif route == "cli":
        code = main(["query", "best-runs", "--store", str(injected), "--format", "json", "--param", text])
        rows = json.loads(capsys.readouterr().out)
        assert code == 0
        # the value is a metric's name, nothing else: it ranks the run only if such a metric exists
        expected = [("injection", 0.5)] if text.startswith("metric=x") else []
        assert [(row["run_name"], row["best"]) for row in rows] == expected
    else:
        rows = ask(injected, "SELECT ?given ?name WHERE { ?m rdfs:label ?name . FILTER(?name = ?given) } ", given=text)
        assert rows == []
    assert _quad_count(injected) == before
