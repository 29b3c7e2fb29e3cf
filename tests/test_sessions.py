"""A store is held by a session: one run's, or a whole sweep's that its runs share.

A single run opens its store and lets go of it when it ends; a sweep holds one session for
all its runs, so they neither open nor let go of it one by one. Readers in this process,
other processes, a kill and the interpreter's exit see no difference but the one holder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pyoxigraph as ox

import cnnprov
from cnnprov import ProvStore, RunRecorder
from cnnprov.storage import local_handles
from cnnprov.storage.advertisement import read_holder
from cnnprov.storage.housekeeping import KEPT_INFO_LOGS
from cnnprov.storage.local import wait_released

LOSS_VALUES = (
    "SELECT ?value WHERE { ?v <http://www.w3.org/ns/mls#specifiedBy> ?m ; <http://www.w3.org/ns/mls#hasValue> ?value ."
    " ?m <http://www.w3.org/2000/01/rdf-schema#label> 'loss' }"
)


def record(store, name: str, values: int = 3) -> RunRecorder:
    recorder = RunRecorder(store, name=name, serve_reads=False)
    recorder.start(new_run=True)
    recorder.epoch_started(0)
    for step in range(values):
        recorder.log_metrics({"loss": 1.0 / (step + 1), "epoch": 0}, step=step)
    recorder.epoch_ended(0)
    recorder.finish("success")
    recorder.close()
    return recorder


def opens(path) -> int:
    """How often the store was opened: RocksDB starts a new info log each time, keeping the last as LOG.old.*."""
    return 1 + len(list(path.glob("LOG.old.*")))


def test_runs_recorded_through_a_session_share_its_open_store(tmp_path):
    path = tmp_path / "provenance"
    with cnnprov.open_session(path, serve_reads=False) as session:
        first = record(session, "first")
        assert read_holder(path).run_id == first.run_id  # the session advertises the run it records
        second = record(session, "second")
        assert read_holder(path).run_id == second.run_id
        assert sorted(ProvStore(path).runs().column("name")) == ["first", "second"]  # read in the process
    wait_released(path)
    assert read_holder(path) is None
    assert opens(path) == 1
    assert sorted(ProvStore(path).runs().column("name")) == ["first", "second"]


def test_runs_without_a_session_each_open_and_let_go_of_the_store(tmp_path):
    path = tmp_path / "provenance"
    record(path, "first")
    record(path, "second")  # waits for the first run's session to let go, in this process
    wait_released(path)
    assert opens(path) == 2
    ox.Store(str(path))  # let go of: pyoxigraph itself can open it


def test_a_sweep_that_wrote_memory_tables_to_disk_leaves_no_spare_write_ahead_logs(tmp_path, monkeypatch):
    monkeypatch.setattr(local_handles, "MEMTABLE_QUADS", 100)  # a flush every run or two, as a long sweep's
    path = tmp_path / "provenance"
    with cnnprov.open_session(path, serve_reads=False) as session:
        for index in range(6):
            record(session, f"run-{index}", values=40)
    wait_released(path)
    spare = {log.name: log.stat().st_size for log in path.glob("*.log") if log.stat().st_size}
    assert spare == {}, "RocksDB's recycled logs stayed behind the session"
    assert len(ProvStore(path).runs()) == 6  # nothing of the records went with them


def test_only_the_newest_old_information_logs_of_rocksdb_stay(tmp_path):
    path = tmp_path / "provenance"
    for index in range(KEPT_INFO_LOGS + 3):
        record(path, f"run-{index}")
    wait_released(path)
    assert len(list(path.glob("LOG.old.*"))) == KEPT_INFO_LOGS
    assert len(ProvStore(path).runs()) == KEPT_INFO_LOGS + 3


def test_another_process_can_write_once_a_single_run_has_ended(tmp_path):
    path = tmp_path / "provenance"
    record(path, "here")
    script = f"from cnnprov import RunRecorder; r = RunRecorder({str(path)!r}, name='there'); r.start(); r.close()"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert sorted(ProvStore(path).runs().column("name")) == ["here", "there"]


def test_a_second_session_in_the_same_process_shares_the_open_store_until_both_close(tmp_path):
    path = tmp_path / "provenance"
    first = cnnprov.open_session(path, serve_reads=False)
    second = cnnprov.open_session(path)  # two loggers of one Trainer, say: no second open of RocksDB
    record(first, "first")
    first.close()
    record(second, "second")  # the store stays open for the hold that is left
    assert sorted(ProvStore(path).runs().column("name")) == ["first", "second"]  # read through it
    second.close(wait=True)
    second.close()  # safe twice
    assert read_holder(path) is None  # let go of, once
    assert opens(path) == 1
    assert sorted(ProvStore(path).runs().column("name")) == ["first", "second"]


def test_a_reader_in_another_process_reads_through_the_session_between_a_sweeps_runs(tmp_path):
    path = tmp_path / "provenance"
    script = textwrap.dedent(
        f"""
        import sys
        import cnnprov
        from cnnprov import RunRecorder

        def run(session, name):
            recorder = RunRecorder(session, name=name)
            recorder.start(new_run=True)
            recorder.epoch_started(0)
            recorder.log_metrics({{"loss": 1.0, "epoch": 0}}, step=0)
            recorder.epoch_ended(0)
            recorder.finish("success")
            recorder.close()

        with cnnprov.open_session({str(path)!r}) as session:  # serving reads
            run(session, "first")
            print("BETWEEN", flush=True)
            sys.stdin.readline()  # the sweep builds its next model: the session still serves the store
            run(session, "second")
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("BETWEEN")
        assert ProvStore(path).runs().column("name") == ["first"]  # through the session's read endpoint
        process.stdin.write("go\n")
        process.stdin.flush()
    finally:
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    assert sorted(ProvStore(path).runs().column("name")) == ["first", "second"]


def test_a_process_killed_while_its_session_holds_the_store_lost_nothing(tmp_path):
    path = tmp_path / "provenance"
    script = textwrap.dedent(
        f"""
        import time
        import cnnprov
        from cnnprov import RunRecorder
        session = cnnprov.open_session({str(path)!r})
        recorder = RunRecorder(session, name="killed-after")
        recorder.start(new_run=True)
        recorder.epoch_started(0)
        for step in range(50):
            recorder.log_metrics({{"loss": 1.0 / (step + 1), "epoch": 0}}, step=step)
        recorder.epoch_ended(0)
        recorder.finish("success")
        recorder.close()
        print("HELD", flush=True)
        time.sleep(120)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("HELD")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    store = ProvStore(path)
    assert store.runs().column("status") == ["success"]
    assert sorted(store.sparql(LOSS_VALUES).column("value")) == sorted(1.0 / (step + 1) for step in range(50))


def test_a_session_left_open_is_closed_at_interpreter_exit(tmp_path):
    path = tmp_path / "provenance"
    script = (
        "import cnnprov; from cnnprov import RunRecorder; "
        f"s = cnnprov.open_session({str(path)!r}); r = RunRecorder(s); r.start(); r.finish(); r.close()"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert read_holder(path) is None  # it let go of the store and withdrew its advertisement
    assert ProvStore(path).runs().column("status") == ["success"]


def test_a_read_in_the_process_of_a_session_that_has_not_opened_its_store_yet_opens_it(tmp_path):
    path = tmp_path / "provenance"
    session = cnnprov.StoreLocation.parse(path).open_session(serve_reads=False, lazy=True)
    try:
        assert not (path / "CURRENT").exists()  # nothing of the store is on disk yet
        assert ProvStore(path).runs().to_dicts() == []  # read through the session, which opens it
        assert (path / "CURRENT").exists()
    finally:
        session.close(wait=True)
