"""The benchmarks run: each in its --smoke mode, as a user would start it, and reports its result fields.

Nothing here is about time; BENCHMARKS.md holds the measured numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_smoke(script: str, tmp_path: Path, *options: str) -> tuple[str, dict]:
    output = tmp_path / f"{script}.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), "--smoke", "--json", str(output), *options],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(output.read_text())
    assert payload["benchmark"] == script
    assert payload["machine"]["cores"] and payload["machine"]["versions"]["python"]
    return result.stdout, payload


def test_overhead_pairs_every_logger_with_a_run_without_one(tmp_path):
    stdout, payload = run_smoke("overhead", tmp_path)
    results = payload["results"]
    assert {"null", "csv", "prov"} <= set(results)
    for logger in results.values():
        assert {
            "median_overhead_pct",
            "min_ratio",
            "max_ratio",
            "median_cpu_overhead_pct",
            "median_train_thread_cpu_overhead_pct",
            "pairs",
        } <= set(logger)
        assert len(logger["pairs"]) == payload["config"]["pairs"] == 1
    assert "| prov" in stdout and "median wall overhead" in stdout


def test_overhead_has_a_realistic_workload_and_attributes_background_cpu(tmp_path):
    stdout, payload = run_smoke("overhead", tmp_path, "--workload", "realistic", "--loggers", "csv,prov")
    assert payload["config"]["workload"] == "realistic"
    assert set(payload["results"]) == {"csv", "prov"}
    for logger in payload["results"].values():
        assert "median_background_share_pct" in logger and len(logger["pairs"]) == 1
    assert "background / training thread" in stdout


def test_hot_path_times_prov_beside_csv_and_its_fixed_costs(tmp_path):
    stdout, payload = run_smoke("hot_path", tmp_path)
    results = payload["results"]
    assert {"prov", "csv"} <= set(results)
    for logger in results.values():
        assert {"median_us_per_call", "p99_us", "first_call_ms", "finalize_ms"} <= set(logger)
    assert {"writer_cpu_us_per_call", "boundary_flush_ms_per_block"} <= set(results["prov"])
    assert "Fixed costs" in stdout


def test_scale_builds_a_sweep_and_times_every_bundled_query(tmp_path):
    from cnnprov.analysis.query_library import bundled_queries

    _stdout, payload = run_smoke("scale", tmp_path)
    write = payload["write"]
    assert write["runs"] == 3 and write["quads"] > 1000
    for field in (
        "recorder_quads_per_s",
        "bulk_extend_quads_per_s",
        "recorder_vs_bulk_extend",
        "store_mib",
        "peak_rss_mib_after_recording",
        "bytes_per_value",
        "compacted_store_mib",
    ):
        assert write[field] > 0
    assert write["compacted_store_mib"] < write["store_mib_released"]  # the copy's table files are compressed
    assert write["step_values"] == "series"
    queries = payload["queries"]
    assert set(queries) == {*bundled_queries(), "ProvStore.metric_values"}
    assert queries["ProvStore.metric_values"]["rows"] == 2 * (5 + 4)  # --smoke: 2 epochs of 5 steps and 4 values
    timed = [name for name, result in queries.items() if "median_ms" in result]
    assert "runs" in timed and "lineage" in timed  # parameters were picked from the store, checkpoints included
    assert all("error" not in result for result in queries.values()), queries
    floor = payload["engine_floor"]
    counted, listed = floor["the same, counted (no row materialized)"], floor["one triple pattern (each mls:hasValue)"]
    assert counted["rows"] == listed["rows"] > 0  # the same pattern, counted and listed
    joined = floor["the least join that lists hyperparameters (5 patterns)"]["rows"]
    assert joined % 3 == 0 and joined > 3 * 7  # each run's 7 hyperparameters and its optimizer's settings


def test_memory_compares_peak_rss_of_a_short_and_a_long_run(tmp_path):
    stdout, payload = run_smoke("memory", tmp_path)
    short, long = payload["results"]
    assert short["calls"] < long["calls"]
    for result in (short, long):
        assert result["peak_rss_mib"] > 0 and result["rss_samples"]
    assert "peak RSS" in stdout


def test_bytes_per_value_pairs_stores_that_differ_only_in_steps(tmp_path):
    stdout, payload = run_smoke("bytes_per_value", tmp_path)
    results = payload["results"]
    assert set(results) == {"series", "entities"}
    for result in results.values():
        fewer, more = result["stores"]["fewer"], result["stores"]["more"]
        assert fewer["values"] < more["values"] and fewer["nquads"] < more["nquads"]
    # an added step costs a point in a literal, not an entity of its own
    assert results["series"]["nquads_bytes_per_added_value"] < results["entities"]["nquads_bytes_per_added_value"] / 10
    assert "N-Quads B / added value" in stdout


def test_ui_browser_times_the_runs_table_and_the_charts_in_chromium(tmp_path):
    _stdout, payload = run_smoke("ui_browser", tmp_path)
    assert payload["runs"] == 3
    assert set(payload["pages"]) == {"runs table", "runs table, filtered", "across runs"}
    for timings in payload["pages"].values():
        assert 0 < timings["server_ms"] <= timings["all_drawn_ms"] <= timings["worst_all_drawn_ms"]
    assert payload["pages"]["across runs"]["parallel_drawn_ms"] > 0
