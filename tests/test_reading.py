"""Reading never writes: reads open the store read-only, take no lock and leave no files, so a
store on read-only media, or one another user owns, is read all the same.

The media and user cases need root (to mount a tmpfs, to run a reader as ``nobody``), as CI has;
elsewhere they are reported as not run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyoxigraph
import pytest

import cnnprov
from cnnprov import ProvStore, RunRecorder
from cnnprov.errors import StoreError

from helpers import CLI, IS_ROOT, cli_env, not_run, ok, tmpfs


def record_a_run(path: Path, name: str = "recorded") -> str:
    recorder = RunRecorder(path, name=name, serve_reads=False)
    recorder.start()
    recorder.epoch_started(0)
    recorder.log_metrics({"loss": 0.5, "epoch": 0}, step=0)
    recorder.epoch_ended(0)
    recorder.finish("success")
    recorder.close(wait=True)
    return recorder.run_id


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {entry.name: (entry.stat().st_size, entry.stat().st_mtime_ns) for entry in path.iterdir()}


def test_reads_leave_the_store_exactly_as_they_found_it(tmp_path):
    path = tmp_path / "provenance"
    record_a_run(path)
    before = snapshot(path)
    for _ in range(10):
        assert [r["name"] for r in ProvStore(path).runs().to_dicts()] == ["recorded"]
    ok("runs", "--store", path)
    ok("export", "--store", path, "--format", "nquads")
    assert snapshot(path) == before  # no new log file, nothing rewritten


def test_a_store_on_read_only_media_is_read(tmp_path):
    with tmpfs(tmp_path / "media") as media:
        path = media / "provenance"
        run_id = record_a_run(path)
        subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
        with pytest.raises(OSError):
            (media / "probe").write_text("x")  # really read-only
        assert [r["run_id"] for r in ProvStore(path).runs().to_dicts()] == [run_id]
        assert run_id in ok("runs", "--store", path)
        assert "loss" in ok("export", "--store", path, "--format", "nquads")


def other_user_python(shared: Path) -> list[str]:
    """A Python that user ``nobody`` may run, with a copy of this cnnprov and of pyoxigraph under
    ``shared`` (the checkout and this interpreter may sit where nobody can enter, e.g. under
    root's home or a private temporary directory)."""
    if not IS_ROOT:
        not_run("reading as another user needs root to become one (CI runs as root)")
    system = Path("/usr/bin/python3")
    asked = [str(system), "-c", "import sys; print(sys.version_info[:2])"]
    version = subprocess.run(asked, capture_output=True, text=True).stdout.strip() if system.exists() else ""
    if version != str(sys.version_info[:2]):
        not_run(f"there is no /usr/bin/python3 of Python {sys.version_info[:2]} for another user to run")
    library = shared / "lib"
    for package in (cnnprov, pyoxigraph):
        shutil.copytree(Path(package.__file__).parent, library / package.__name__)
    subprocess.run(["chmod", "-R", "a+rX", str(library)], check=True)
    entry = f"import sys; sys.path[:0] = [{str(library)!r}]; from cnnprov.cli import main; sys.exit(main())"
    return [str(system), "-c", entry]


def test_another_user_reads_a_store_they_cannot_write(tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="cnnprov-shared-"))  # tmp_path itself is private to root
    try:
        shared.chmod(0o755)
        command = other_user_python(shared)
        path = shared / "provenance"
        run_id = record_a_run(path)
        for entry in [path, *path.iterdir()]:
            entry.chmod(0o555 if entry.is_dir() else 0o444)  # nobody may write it; its owner may not either
        reader = subprocess.run(
            [*command, "runs", "--store", str(path), "--format", "csv"],
            capture_output=True, text=True, env=cli_env(HOME=str(shared)), user=65534, group=65534, cwd=shared,
            timeout=120,
        )
        assert reader.returncode == 0, reader.stderr
        assert run_id in reader.stdout
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)


def test_a_damaged_store_is_one_clear_line_not_a_traceback(tmp_path):
    path = tmp_path / "provenance"
    record_a_run(path)
    (path / "CURRENT").write_text("")  # RocksDB cannot find its manifest
    with pytest.raises(StoreError, match=r"cannot read the provenance store at .*cnnprov export"):
        ProvStore(path).runs()
    result = subprocess.run([*CLI, "runs", "--store", str(path)], capture_output=True, text=True, env=cli_env())
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot read the provenance store" in result.stderr


def test_a_run_whose_advertisement_cannot_be_removed_still_finishes(tmp_path, caplog, monkeypatch):
    """A store directory made read-only before the run ends (root removes files anywhere, so the
    refusal is made here): the run is recorded all the same, and the leftover file is named."""
    path = tmp_path / "provenance"
    recorder = RunRecorder(path, name="read-only-at-the-end")  # serving reads: it advertises itself
    recorder.start()
    recorder.epoch_started(0)
    recorder.log_metrics({"loss": 0.5, "epoch": 0}, step=0)
    recorder.epoch_ended(0)
    recorder.finish("success")
    unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self.name == "cnnprov-writer.json":
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    recorder.close(wait=True)  # must not raise: nothing of the run is lost
    monkeypatch.undo()
    assert "cnnprov-writer.json" in caplog.text and "Permission denied" in caplog.text
    (run,) = ProvStore(path).runs().to_dicts()  # the advertisement left behind names a process that ended
    assert (run["name"], run["status"]) == ("read-only-at-the-end", "success")


def test_training_into_a_damaged_store_fails_at_the_start_with_one_clear_line(tmp_path):
    from cnnprov import ProvLogger
    from cnnprov.demo import DigitsCNN

    from helpers import tiny_data, tiny_trainer

    path = tmp_path / "provenance"
    record_a_run(path)
    (path / "CURRENT").write_text("")
    trainer = tiny_trainer(tmp_path, ProvLogger(store=path), max_epochs=1)
    with pytest.raises(StoreError, match=r"cannot open the provenance store at .*Corruption.*other-dir"):
        trainer.fit(DigitsCNN(), datamodule=tiny_data())


def test_a_read_in_the_process_that_holds_the_store_keeps_its_lock(tmp_path, monkeypatch):
    """The lock check must not open RocksDB's LOCK file: closing it would drop this process's lock."""
    import pyoxigraph as ox

    from cnnprov.errors import StoreLockedError

    monkeypatch.setenv("CNNPROV_READ_WAIT_S", "0.2")
    path = tmp_path / "provenance"
    record_a_run(path)
    held = ox.Store(str(path))  # this process writes the store, outside any session
    try:
        with pytest.raises(StoreLockedError):  # held, and serving nothing: the read says so
            ProvStore(path).runs()
        opener = f"import pyoxigraph; pyoxigraph.Store({str(path)!r})"
        second = subprocess.run([sys.executable, "-c", opener], capture_output=True, text=True)
        assert second.returncode != 0 and "lock" in second.stderr.lower()  # still held: one writer only
    finally:
        del held


def test_a_stale_advertisement_naming_a_live_process_does_not_stop_a_read(tmp_path):
    """The process an old advertisement names may live on (pid 1 does); the store itself says it is free."""
    import json
    import socket

    path = tmp_path / "provenance"
    run_id = record_a_run(path)
    advert = {"pid": 1, "host": socket.gethostname(), "run_id": "gone", "since": "2026-01-01T00:00:00+0000",
              "url": "http://127.0.0.1:9/sparql", "token": "stale"}
    (path / "cnnprov-writer.json").write_text(json.dumps(advert))
    assert run_id in ok("runs", "--store", path)
    assert [r["run_id"] for r in ProvStore(path).runs().to_dicts()] == [run_id]
