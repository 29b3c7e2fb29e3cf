"""`cnnprov compact`: a compressed copy of a store holds every quad and graph, and can be written to."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyoxigraph as ox
import pytest

from cnnprov import ProvStore, RunRecorder, open_session
from cnnprov.errors import StoreError, StoreOpenInThisProcessError
from cnnprov.storage.compaction import PARTIAL_MARKER, compact
from cnnprov.storage.local import wait_released

from helpers import ok, tmpfs


def _quads(path: Path) -> set[str]:
    store = ox.Store.read_only(str(path))
    return {str(quad) for quad in store}


def _table_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.glob("*.sst"))


@pytest.fixture
def source(sweep_store: ProvStore, tmp_path: Path) -> Path:
    """A copy of two real Lightning runs' store, to be compacted."""
    path = tmp_path / "provenance"
    wait_released(sweep_store.location.path)  # the sweep's session may still be letting go of it
    shutil.copytree(sweep_store.location.path, path)
    return path


def test_the_copy_holds_every_quad_and_graph_in_less_disk_and_the_store_is_unchanged(
    source: Path, tmp_path: Path
) -> None:
    before = _quads(source)
    empty = ox.NamedNode("https://example.org/an-empty-graph")
    held = ox.Store(str(source))
    held.add_graph(empty)
    del held
    calls: list[tuple[int, int]] = []

    done = compact(source, tmp_path / "copy", progress=lambda copied, total: calls.append((copied, total)))

    copy = tmp_path / "copy"
    assert _quads(copy) == before == _quads(source)
    assert done.quads == len(before) and done.graphs == 3
    assert empty in set(ox.Store.read_only(str(copy)).named_graphs())
    assert calls[0] == (0, len(before))
    assert _table_bytes(copy) < 0.8 * _table_bytes(source)  # LZ4 table files against uncompressed ones
    assert done.output_bytes < done.source_bytes
    assert not (copy / PARTIAL_MARKER).exists() and not (tmp_path / "copy.partial").exists()
    assert [run["run_id"] for run in ProvStore(copy).runs()] == [run["run_id"] for run in ProvStore(source).runs()]


def test_runs_can_be_recorded_into_the_copy(source: Path, tmp_path: Path) -> None:
    compact(source, tmp_path / "copy")
    with open_session(tmp_path / "copy", serve_reads=False) as session:
        recorder = RunRecorder(session, name="after compaction")
        recorder.start(new_run=True)
        recorder.log_hyperparameters({"lr": 0.1})
        recorder.finish("success")
        recorder.close()
    names = {run["name"] for run in ProvStore(tmp_path / "copy").runs()}
    assert "after compaction" in names and len(names) == 3


def test_a_store_this_process_writes_is_not_copied(source: Path, tmp_path: Path) -> None:
    with open_session(source, serve_reads=False), pytest.raises(StoreOpenInThisProcessError):
        compact(source, tmp_path / "copy")
    assert not (tmp_path / "copy").exists() and not (tmp_path / "copy.partial").exists()


def test_an_existing_directory_is_never_overwritten(source: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    with pytest.raises(StoreError, match="exists"):
        compact(source, taken)
    assert (taken / "mine.txt").read_text() == "keep"
    with pytest.raises(StoreError, match="inside it"):
        compact(source, source / "copy")


def test_a_copy_cut_short_leaves_nothing_and_the_next_one_completes(source: Path, tmp_path: Path) -> None:
    def interrupt(copied: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compact(source, tmp_path / "copy", progress=interrupt)
    assert not (tmp_path / "copy").exists() and not (tmp_path / "copy.partial").exists()
    (tmp_path / "copy.partial").mkdir()
    (tmp_path / "copy.partial" / PARTIAL_MARKER).touch()  # as a killed copy leaves it
    compact(source, tmp_path / "copy")
    assert _quads(tmp_path / "copy") == _quads(source)


def test_the_command_says_what_it_wrote(source: Path, tmp_path: Path) -> None:
    out = ok("compact", "--store", source, tmp_path / "copy")
    assert "quads in 2 graphs" in out and "unchanged" in out
    assert _quads(tmp_path / "copy") == _quads(source)


def test_a_full_disk_is_a_clear_error_that_leaves_nothing(source: Path, tmp_path: Path) -> None:
    before = _quads(source)
    with tmpfs(tmp_path / "disk", size="300k") as disk:
        with pytest.raises(StoreError, match=r"cannot write the copy .* free space"):
            compact(source, disk / "copy")
        assert list(disk.iterdir()) == []
    assert _quads(source) == before
