"""A sweep's runs share one open store: a finished run keeps it open for the next run of the process.

Letting go of a store costs a flush of RocksDB's memory tables (and opening it
again); a run that starts within ``KEEP_OPEN_S`` takes the open store instead.
Everything else (readers in this process, other processes, the interpreter's
exit, a kill) must see no difference but that short wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pyoxigraph as ox

from cnnprov import ProvStore, RunRecorder
from cnnprov.storage import local as store_module
from cnnprov.storage.local import open_for_writing, writer_info
from cnnprov.storage.writer import QuadWriter

P = ox.NamedNode("https://example.org/p")
G = ox.NamedNode("https://example.org/g")


def record(path, name: str, values: int = 3) -> RunRecorder:
    recorder = RunRecorder(path, name=name, serve_reads=False)
    recorder.start(new_run=True)
    recorder.epoch_started(0)
    for step in range(values):
        recorder.log_metrics({"loss": 1.0 / (step + 1), "epoch": 0}, step=step)
    recorder.epoch_ended(0)
    recorder.finish("success")
    return recorder


def test_a_run_that_starts_right_after_another_takes_its_open_store(tmp_path, monkeypatch):
    opened = []
    real_open = store_module.open_for_writing
    monkeypatch.setattr(store_module, "open_for_writing", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    path = tmp_path / "provenance"
    first = record(path, "first")
    first._writer.wait_open()
    first.close()
    second = RunRecorder(path, name="second", serve_reads=False)
    second.start(new_run=True)
    second._writer.wait_open()
    assert len(opened) == 1  # the second run took the open store instead of opening it again
    assert writer_info(path)["run_id"] == second.run_id  # and advertised as the new run's
    second.epoch_started(0)
    second.log_metrics({"loss": 0.5, "epoch": 0}, step=0)
    second.finish("success")
    second.close()
    runs = ProvStore(path).runs()  # a reader in this process lets go of the kept store
    assert sorted(runs.column("name")) == ["first", "second"]
    assert set(runs.column("status")) == {"success"}
    assert store_module._kept(path) is None and writer_info(path) is None


def test_a_kept_store_is_let_go_of_after_a_moment_for_other_processes(tmp_path):
    path = tmp_path / "provenance"
    record(path, "only").close()
    kept = store_module._kept(path)
    assert kept is not None  # held for a run that might follow
    assert kept.released.wait(store_module.KEEP_OPEN_S + 30)  # nobody came: the timer let go of it
    assert writer_info(path) is None
    script = f"from cnnprov.storage.local import open_for_writing; open_for_writing({str(path)!r}, wait_s=0)"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)  # no lock left to wait for


def test_another_process_waits_for_a_kept_store_instead_of_failing(tmp_path):
    path = tmp_path / "provenance"
    record(path, "only").close()
    assert store_module._kept(path) is not None
    script = (
        f"from cnnprov.storage.local import open_for_writing; import pyoxigraph as ox\n"
        f"store = open_for_writing({str(path)!r}, wait_s=30)\n"
        f"print(sum(1 for _ in store.quads_for_pattern(None, None, None)) > 0)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_opening_the_store_in_this_process_lets_go_of_a_kept_store(tmp_path):
    path = tmp_path / "provenance"
    record(path, "only").close()
    assert store_module._kept(path) is not None
    store = open_for_writing(path, wait_s=0)  # no lock error: the kept store was let go of first
    assert len(store) > 0


def test_a_process_killed_while_it_keeps_the_store_open_lost_nothing(tmp_path):
    path = tmp_path / "provenance"
    script = textwrap.dedent(
        f"""
        import sys, time
        from cnnprov import RunRecorder
        recorder = RunRecorder({str(path)!r}, name="killed-after", serve_reads=False)
        recorder.start(new_run=True)
        recorder.epoch_started(0)
        for step in range(50):
            recorder.log_metrics({{"loss": 1.0 / (step + 1), "epoch": 0}}, step=step)
        recorder.epoch_ended(0)
        recorder.finish("success")
        recorder.close()
        print("KEPT", flush=True)
        time.sleep(120)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("KEPT")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    store = ProvStore(path)
    assert store.runs().column("status") == ["success"]
    values = store.sparql(
        "SELECT ?value WHERE { ?v <http://www.w3.org/ns/mls#specifiedBy> ?m ;"
        " <http://www.w3.org/ns/mls#hasValue> ?value ."
        " ?m <http://www.w3.org/2000/01/rdf-schema#label> 'loss' }"
    ).column("value")
    assert sorted(values) == sorted(1.0 / (step + 1) for step in range(50))


def test_the_unflushed_quad_count_goes_with_the_store_to_the_next_writer(tmp_path):
    store = ox.Store(str(tmp_path / "s"))
    handed = []
    first = QuadWriter(store)
    first.extend(ox.Quad(ox.NamedNode(f"https://example.org/s{i}"), P, ox.Literal(i), G) for i in range(10))
    first.close(hand_to=lambda s, unflushed: handed.append((s, unflushed)))
    assert handed == [(store, 10)]
    second = QuadWriter(handed[0])
    second.extend(ox.Quad(ox.NamedNode(f"https://example.org/t{i}"), P, ox.Literal(i), G) for i in range(5))
    second.close(hand_to=lambda s, unflushed: handed.append((s, unflushed)))
    assert handed[1] == (store, 15) and len(store) == 15


def test_a_reader_in_another_process_between_a_sweeps_runs_reads_through_the_next_run(tmp_path):
    path = tmp_path / "provenance"
    script = textwrap.dedent(
        f"""
        import sys, time
        from cnnprov import RunRecorder

        def run(name):
            recorder = RunRecorder({str(path)!r}, name=name)  # serving reads, as ProvLogger does
            recorder.start(new_run=True)
            recorder.epoch_started(0)
            recorder.log_metrics({{"loss": 1.0, "epoch": 0}}, step=0)
            return recorder

        first = run("first")
        first.epoch_ended(0)
        first.finish("success")
        first.close()
        print("KEPT", flush=True)
        time.sleep(0.5)  # the sweep builds its next model: the store stays held, nothing serves it
        second = run("second")
        sys.stdin.read()
        second.finish("success")
        second.close()
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("KEPT")
        runs = ProvStore(path).runs()  # waits for the lock, and finds the next run's endpoint meanwhile
        assert "first" in runs.column("name")
    finally:
        process.stdin.close()
        process.wait(timeout=60)
    assert sorted(ProvStore(path).runs().column("name")) == ["first", "second"]


def test_a_run_whose_writer_was_closed_already_leaves_nothing_to_wait_for(tmp_path):
    path = tmp_path / "provenance"
    recorder = record(path, "closed-at-exit")
    recorder._writer.close()  # as the writer's own exit handler does, before the run's close
    recorder.close()
    kept = store_module._kept(path)
    assert kept is None or kept.released.is_set()
    assert len(open_for_writing(path, wait_s=0)) > 0


def test_a_store_that_cannot_be_kept_is_let_go_of_at_once(tmp_path, monkeypatch):
    path = tmp_path / "provenance"
    store = open_for_writing(path, run_id="no-threads-left")

    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(store_module.threading.Timer, "start", refuse)
    kept = store_module.keep_open(path)
    kept.hold(store, 0)
    del store
    assert kept.released.is_set() and writer_info(path) is None
    assert len(open_for_writing(path, wait_s=0)) == 0
