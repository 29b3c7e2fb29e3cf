"""The demo runs end to end, and a built wheel carries the queries and the ontology."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cnnprov.analysis.query_library import bundled_queries

ROOT = Path(__file__).resolve().parents[1]


def cnnprov(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnnprov.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_demo_trains_the_grid_and_prints_the_ranked_runs_and_epoch_times(tmp_path):
    result = cnnprov("demo", "--epochs", "2", "--limit", "300", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("2 epochs in") == 4
    assert "Runs ranked by their best validation accuracy" in out and "Time per epoch" in out
    # the demo wrote to the default store, where `cnnprov runs` finds it with no --store
    runs = json.loads(cnnprov("runs", "--format", "json", cwd=tmp_path).stdout)
    assert sorted(r["name"] for r in runs) == [
        "lr=0.01,dropout=0.0", "lr=0.01,dropout=0.5", "lr=0.1,dropout=0.0", "lr=0.1,dropout=0.5",
    ]  # fmt: skip
    assert all(r["status"] == "success" and r["epochs"] == 2 for r in runs)
    ranked_ids = [line.split()[0] for line in out.splitlines() if any(r["run_id"] in line for r in runs)][:4]
    assert sorted(ranked_ids) == sorted(r["run_id"] for r in runs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("cnnprov-*.whl")
    return built


def test_wheel_ships_every_query_the_ontology_and_the_console_script(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for query in bundled_queries():
        assert f"cnnprov/queries/{query}.rq" in names
    assert "cnnprov/ontologies/cnnprov.ttl" in names
    assert "cnnprov/ontologies/imports/mls-terms.ttl" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cnnprov = cnnprov.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_every_bundled_query_opens_with_its_question_and_an_example():
    from cnnprov.analysis.query_library import load_query

    assert {"runs", "best-runs", "epoch-times"} <= set(bundled_queries())
    for name in bundled_queries():
        query = load_query(name)
        assert query.question.endswith("."), name
        assert query.example.startswith(f"cnnprov query {name}"), name
