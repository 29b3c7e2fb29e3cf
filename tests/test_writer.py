"""The write path: buffered on the training thread, durable at flushes, at finish and at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pyoxigraph as ox
import pytest

from cnnprov import ProvStore, RunRecorder
from cnnprov.errors import StoreError, StoreWriteError
from cnnprov.storage.local_handles import LocalTarget
from cnnprov.storage.location import StoreLocation
from cnnprov.storage.write_items import Replace, Update
from cnnprov.storage.writer import QuadWriter

G = ox.NamedNode("https://example.org/g")
P = ox.NamedNode("https://example.org/p")


def quad(i: int) -> ox.Quad:
    return ox.Quad(ox.NamedNode(f"https://example.org/s{i}"), P, ox.Literal(i), G)


def test_appends_stay_in_memory_until_a_flush_stores_them(tmp_path):
    store = ox.Store(str(tmp_path / "s"))
    writer = QuadWriter(LocalTarget(store))
    for i in range(10):
        writer.append(quad(i))
    assert len(store) == 0 and writer.pending == 10
    writer.flush(wait=True)
    assert len(store) == 10 and writer.pending == 0
    writer.close()
    writer.close()  # twice is fine


def test_a_full_buffer_is_handed_over_without_waiting_for_an_epoch_end(tmp_path):
    store = ox.Store(str(tmp_path / "s"))
    writer = QuadWriter(LocalTarget(store), max_buffered=100)
    for i in range(250):
        writer.append(quad(i))
    deadline = time.monotonic() + 30
    while len(store) < 200 and time.monotonic() < deadline:  # no flush: the writer thread stores them
        time.sleep(0.01)
    assert len(store) == 200 and writer.pending == 50  # two full batches; the rest waits for a flush
    writer.flush(wait=True)
    assert len(store) == 250
    writer.close()


def test_items_are_converted_on_the_writer_thread_and_replace_overwrites(tmp_path):
    import threading

    store = ox.Store(str(tmp_path / "s"))
    threads = set()

    def convert(item):
        threads.add(threading.current_thread().name)
        return [quad(item)]

    writer = QuadWriter(LocalTarget(store), convert=convert)
    writer.append(1)
    writer.append(Replace(ox.NamedNode("https://example.org/s1"), P, G, (ox.Literal("new"),)))
    writer.close()
    assert threads == {"cnnprov-writer"}
    assert [q.object.value for q in store.quads_for_pattern(None, P, None, G)] == ["new"]


def test_buffered_records_reach_the_store_at_interpreter_exit(tmp_path):
    """A script that never finishes its run still leaves what it recorded, and the run shows no end."""
    path = tmp_path / "provenance"
    script = textwrap.dedent(
        f"""
        from cnnprov import RunRecorder
        recorder = RunRecorder({str(path)!r}, name="left-open")
        recorder.start()
        recorder.epoch_started(0)
        recorder.log_metrics({{"loss": 0.5, "epoch": 0}}, step=3)
        # no finish(), no close(): the interpreter exits with records still buffered
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    store = ProvStore(path)
    (run,) = store.runs().to_dicts()
    # no end recorded; its process has gone, so it reads as crashed
    assert (run["name"], run["status"], run["ended"], run["epochs"]) == ("left-open", "crashed", None, 1)
    values = store.sparql(
        "SELECT ?v ?step WHERE { ?m <http://www.w3.org/ns/mls#hasValue> ?v ;"
        " <https://w3id.org/cnnprov/ns#atStep> ?step }"
    ).to_dicts()
    assert values == [{"v": 0.5, "step": 3}]


def test_a_second_writer_gets_a_clear_message_naming_the_holder(tmp_path):
    path = tmp_path / "provenance"
    holder = RunRecorder(path, name="holder")
    holder.start()
    try:
        script = (
            "from cnnprov.storage.location import StoreLocation; "
            f"StoreLocation.parse({str(path)!r}, lock_wait_s=0.2).open_session()"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "StoreLockedError" in result.stderr
        assert f"in use by process {__import__('os').getpid()}" in result.stderr
        assert holder.run_id in result.stderr
    finally:
        holder.finish()
        holder.close()
    assert ProvStore(path).runs().column("status") == ["success"]


@pytest.mark.parametrize(
    "make_path, message",
    [
        (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "is a file"),
        (
            lambda tmp: (tmp / "notes").mkdir() or ((tmp / "notes" / "a.txt").write_text("x") and tmp / "notes"),
            "holds other files",
        ),
    ],
)
def test_a_path_that_cannot_be_a_store_is_refused_clearly(tmp_path, make_path, message):
    with pytest.raises(StoreError, match=message):
        StoreLocation.parse(make_path(tmp_path)).open_session()


class FailsOnce(LocalTarget):
    """A real store whose first write fails, as a full disk would."""

    failed = False

    def extend(self, quads) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("No space left on device")
        super().extend(quads)


def test_a_failed_write_is_retried_with_what_the_items_converted_to_not_converted_again(tmp_path):
    store = ox.Store(str(tmp_path / "s"))
    conversions = []

    def convert(item):  # keeps state, as the recorder's conversion does (value numbers, summaries)
        conversions.append(item)
        return [quad(len(conversions) * 100 + item)]

    writer = QuadWriter(FailsOnce(store), convert=convert)
    writer.extend([1, 2, 3])
    with pytest.raises(StoreWriteError, match="kept in memory and tried again"):
        writer.flush()
    assert len(store) == 0 and writer.pending == 3
    writer.flush()  # the retry
    writer.close()
    assert conversions == [1, 2, 3]
    assert sorted(q.object.value for q in store) == ["101", "202", "303"]


class CountsWrites(LocalTarget):
    """A real store that counts its transactions; ``fail_updates`` refuses that many updates first."""

    def __init__(self, store, fail_updates: int = 0) -> None:
        super().__init__(store)
        self.writes: list[str] = []
        self.fail_updates = fail_updates

    def extend(self, quads) -> None:
        self.writes.append("extend")
        super().extend(quads)

    def update(self, sparql: str) -> None:
        if self.fail_updates:
            self.fail_updates -= 1
            raise OSError("No space left on device")
        self.writes.append("update")
        super().update(sparql)


def statistic(value: int) -> Update:
    """A run's statistic rewritten, as the summaries' update does."""
    run = f"GRAPH <{G.value}> {{ <https://example.org/run> <{P.value}>"
    return Update(f"DELETE WHERE {{ {run} ?v }} }} ; INSERT DATA {{ {run} {value} }} }}")


def test_a_few_quads_before_an_update_are_written_in_its_transaction(tmp_path):
    store = ox.Store(str(tmp_path / "s"))
    target = CountsWrites(store)
    writer = QuadWriter(target)
    for i in range(3):  # an epoch's start, then its summaries' update, then the rest of the epoch
        writer.append(quad(i))
    writer.append(statistic(1))
    for i in range(3, 200):
        writer.append(quad(i))
    writer.flush()
    assert target.writes == ["update", "extend"]  # not extend, update, extend
    for i in range(200, 300):  # too many to fold: quads and the update each a transaction
        writer.append(quad(i))
    writer.append(statistic(2))
    writer.close()
    assert target.writes == ["update", "extend", "extend", "update"]
    run = ox.NamedNode("https://example.org/run")
    assert [q.object.value for q in store.quads_for_pattern(run, P, None, G)] == ["2"]
    assert len(store) == 301  # every quad, and the statistic once


def test_quads_folded_into_an_update_that_fails_are_kept_and_written_with_it_later(tmp_path):
    store = ox.Store(str(tmp_path / "s"))
    target = CountsWrites(store, fail_updates=1)
    writer = QuadWriter(target)
    writer.extend([quad(0), quad(1), statistic(7), quad(2)])
    with pytest.raises(StoreWriteError, match="kept in memory and tried again"):
        writer.flush()
    assert len(store) == 0 and writer.pending == 4  # nothing half-written
    writer.flush()
    writer.close()
    assert sorted(q.object.value for q in store) == ["0", "1", "2", "7"]


def test_an_update_with_a_prologue_is_not_folded_since_oxigraph_takes_prefix_only_first(tmp_path):
    store = ox.Store(str(tmp_path / "s"))
    target = CountsWrites(store)
    writer = QuadWriter(target)
    prefixed = Update(f"PREFIX ex: <https://example.org/>\nINSERT DATA {{ GRAPH <{G.value}> {{ ex:run ex:p 5 }} }}")
    writer.extend([quad(0), prefixed])
    writer.close()
    assert target.writes == ["extend", "update"]
    assert len(store) == 2
