"""Per-run metric summaries agree with the values they summarize: after training, after a resume."""

from __future__ import annotations

import json
import math

import pytest

import cnnprov
from cnnprov import ProvStore, RunRecorder
from cnnprov.capture.summaries import RunningSummary

PREFIXES = """PREFIX mls: <http://www.w3.org/ns/mls#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
"""

SUMMARIES = PREFIXES + """
SELECT ?run_id ?name ?count ?low ?high ?last ?low_epoch ?high_epoch ?last_epoch WHERE {
  GRAPH ?g {
    ?summary a cnnprov:MetricSummary ; cnnprov:summaryOf ?run ; cnnprov:ofMeasure [ rdfs:label ?name ] ;
             cnnprov:valueCount ?count ; cnnprov:lastValue ?last .
    ?run cnnprov:runId ?run_id .
    OPTIONAL { ?summary cnnprov:minValue ?low }
    OPTIONAL { ?summary cnnprov:maxValue ?high }
    OPTIONAL { ?summary cnnprov:minEpoch ?low_epoch }
    OPTIONAL { ?summary cnnprov:maxEpoch ?high_epoch }
    OPTIONAL { ?summary cnnprov:lastEpoch ?last_epoch }
  }
}"""

CP = "https://w3id.org/cnnprov/ns#"

VALUES = PREFIXES + """
SELECT ?run_id ?name ?node ?value ?epoch WHERE {
  GRAPH ?g {
    ?node a mls:ModelEvaluation ; mls:specifiedBy [ rdfs:label ?name ] ; mls:hasValue ?value .
    ?g cnnprov:describesRun [ cnnprov:runId ?run_id ] .
    OPTIONAL { ?node cnnprov:atEpoch ?epoch }
  }
}"""


SERIES = PREFIXES + """
SELECT ?run_id ?name ?series ?points ?epoch WHERE {
  GRAPH ?g {
    ?series a cnnprov:MetricSeries ; mls:specifiedBy [ rdfs:label ?name ] ; cnnprov:seriesPoints ?points .
    ?g cnnprov:describesRun [ cnnprov:runId ?run_id ] .
    OPTIONAL { ?series cnnprov:atEpoch ?epoch }
  }
}"""


def expected_summaries(store: ProvStore) -> dict[tuple[str, str], dict]:
    """Each run's and measure's summary, computed here from every stored value."""
    grouped: dict[tuple[str, str], list[tuple[int, float, int | None]]] = {}
    for row in store.sparql(VALUES).to_dicts():
        order = int(row["node"].rsplit("-", 1)[1])  # values are numbered as they were logged
        grouped.setdefault((row["run_id"], row["name"]), []).append((order, row["value"], row["epoch"]))
    for row in store.sparql(SERIES).to_dicts():  # step-level values: the points of series, in step order
        points = [(step, value) for step, value, *_ in json.loads(row["points"])]
        values = grouped.setdefault((row["run_id"], row["name"]), [])
        values += [(int(row["series"].rsplit("-", 1)[1]) * 10**6 + step, value, row["epoch"]) for step, value in points]
    expected = {}
    for key, values in grouped.items():
        values.sort()
        numbers = [v for _, v, _ in values if not math.isnan(v)]
        low, high = min(numbers), max(numbers)
        expected[key] = {
            "count": len(values),
            "low": low,
            "high": high,
            "last": values[-1][1],
            "low_epoch": min((e for _, v, e in values if v == low and e is not None), default=None),
            "high_epoch": min((e for _, v, e in values if v == high and e is not None), default=None),
            "last_epoch": values[-1][2],
        }
    return expected


def recorded_summaries(store: ProvStore) -> dict[tuple[str, str], dict]:
    rows = store.sparql(SUMMARIES).to_dicts()
    recorded = {(row.pop("run_id"), row.pop("name")): row for row in rows}
    assert len(recorded) == len(rows), "a summary holds a property twice: an update left an old value"
    return recorded


def test_every_run_and_measure_has_one_summary_that_agrees_with_its_values(sweep_store):
    recorded = recorded_summaries(sweep_store)
    expected = expected_summaries(sweep_store)
    assert recorded == expected
    assert {name for _, name in recorded} >= {"train_loss_step", "val_loss", "val_acc"}
    assert len({run for run, _ in recorded}) == 2


def test_a_resumed_run_summarizes_the_values_of_both_attempts(tmp_path):
    path = tmp_path / "provenance"
    first = RunRecorder(path, name="interrupted")
    first.start()
    first.epoch_started(0)
    first.log_metrics({"loss": 0.9, "epoch": 0}, step=0)
    first.log_metrics({"loss": 0.4, "epoch": 0}, step=1)
    first.epoch_ended(0)
    first.epoch_started(1)
    first.log_metrics({"loss": 0.2, "epoch": 1}, step=2)  # stored, but no epoch end summarized it
    first.close()  # as a crash would leave it: no finish, no summary of epoch 1

    second = RunRecorder(path, run_id=first.run_id)
    second.start()  # continues the stored run
    second.epoch_started(1)
    second.log_metrics({"loss": 0.3, "epoch": 1}, step=3)
    second.log_metrics({"acc": 0.7, "epoch": 1}, step=3)
    second.epoch_ended(1)
    second.finish()
    second.close()

    store = ProvStore(path)
    recorded = recorded_summaries(store)
    assert recorded == expected_summaries(store)
    assert recorded[(first.run_id, "loss")] == {
        "count": 4,
        "low": 0.2,
        "high": 0.9,
        "last": 0.3,
        "low_epoch": 1,
        "high_epoch": 0,
        "last_epoch": 1,
    }


def test_a_test_stage_value_is_summarized_at_the_stage_end_without_an_epoch(tmp_path):
    recorder = RunRecorder(tmp_path / "provenance")
    recorder.start()
    recorder.log_metrics({"test_acc": 0.8})
    recorder.finish()
    recorder.close()
    (summary,) = recorded_summaries(ProvStore(tmp_path / "provenance")).values()
    assert summary == {
        "count": 1,
        "low": 0.8,
        "high": 0.8,
        "last": 0.8,
        "low_epoch": None,
        "high_epoch": None,
        "last_epoch": None,
    }


def test_a_new_stage_replaces_summaries_the_store_may_not_hold_as_the_last_writer_believed(tmp_path):
    """A stage's writer may end with updates the store never took (a full disk); the next replaces them whole."""
    import pyoxigraph as ox

    from cnnprov.storage.local import wait_released

    path = tmp_path / "provenance"
    recorder = RunRecorder(path)
    recorder.start()
    recorder.epoch_started(0)
    recorder.log_metrics({"loss": 1.0, "epoch": 0}, step=0)
    recorder.epoch_ended(0)
    recorder.epoch_started(1)  # summaries of epoch 0 written
    recorder.epoch_ended(1)
    recorder.stage_ended()
    recorder.close()  # between stages, as Lightning's fit then test
    wait_released(path)
    store = ox.Store(str(path))  # the store now holds something else than the writer wrote
    count = ox.NamedNode("https://w3id.org/cnnprov/ns#valueCount")
    for quad in list(store.quads_for_pattern(None, count, None)):
        store.remove(quad)
        store.add(ox.Quad(quad.subject, count, ox.Literal(999), quad.graph_name))
    del store
    recorder.start()  # a test stage
    recorder.log_metrics({"loss": 0.5})
    recorder.finish()
    recorder.close()
    (summary,) = recorded_summaries(ProvStore(path)).values()  # one value of each property
    assert (summary["count"], summary["low"], summary["last"]) == (2, 0.5, 0.5)


@pytest.mark.parametrize(
    "values, low, high, last",
    [
        ([float("nan"), 2.0, 1.0], 1.0, 2.0, 1.0),
        ([1.0, float("nan")], 1.0, 1.0, "nan"),
        ([float("nan")], None, None, "nan"),
    ],
)
def test_a_diverged_value_is_counted_and_can_be_last_but_is_no_extreme(values, low, high, last):
    summary = RunningSummary()
    for epoch, value in enumerate(values):
        summary.add(value, epoch)
    assert (summary.count, summary.low, summary.high) == (len(values), low, high)
    assert math.isnan(summary.last) if last == "nan" else summary.last == last


def test_the_lowest_value_keeps_the_first_epoch_that_reached_it():
    summary = RunningSummary()
    for epoch, value in enumerate([0.5, 0.3, 0.3, 0.4]):
        summary.add(value, epoch)
    assert (summary.low, summary.low_epoch, summary.high, summary.high_epoch) == (0.3, 1, 0.5, 0)
    assert (summary.last, summary.last_epoch) == (0.4, 3)


def test_the_hyperparameter_list_of_each_run_says_what_its_own_settings_say(sweep_store):
    settings = sweep_store.sparql(
        PREFIXES
        + """PREFIX prov: <http://www.w3.org/ns/prov#>
        SELECT ?run_id ?name ?value WHERE { GRAPH ?g {
          ?run cnnprov:runId ?run_id ; prov:used ?setting .
          ?setting a mls:HyperParameterSetting ; mls:specifiedBy [ rdfs:label ?name ] .
          OPTIONAL { ?setting mls:hasValue ?value }  # a setting of None has no value
          FILTER NOT EXISTS { ?setting cnnprov:settingOf ?owner } } }"""
    ).to_dicts()
    expected: dict[str, dict[str, str]] = {}
    for row in settings:
        value = row["value"]
        text = "true" if value is True else "false" if value is False else "None" if value is None else str(value)
        expected.setdefault(row["run_id"], {})[row["name"]] = text
    listed = sweep_store.sparql(
        PREFIXES
        + "SELECT ?run_id ?list WHERE { GRAPH ?g { ?run cnnprov:runId ?run_id ; cnnprov:hyperparameterList ?list } }"
    ).to_dicts()
    assert len(listed) == len(expected) == 2
    for row in listed:
        pairs = dict(pair.split("=", 1) for pair in row["list"].split(", "))
        assert list(pairs) == sorted(pairs)
        assert pairs.keys() == expected[row["run_id"]].keys()
        for name, text in pairs.items():
            want = expected[row["run_id"]][name]
            assert text == want or float(text) == float(want), (name, text, want)
    assert {"dropout=0", "dropout=0.5"} <= {p for row in listed for p in row["list"].split(", ")}


EPOCHS = PREFIXES + """
SELECT ?run_id ?index ?seconds WHERE { GRAPH ?g {
  ?epoch a cnnprov:Epoch ; cnnprov:partOfRun ?run ; cnnprov:epochIndex ?index .
  ?run cnnprov:runId ?run_id .
  OPTIONAL { ?epoch cnnprov:durationSeconds ?seconds } } }"""

STATISTICS = PREFIXES + """
SELECT ?run_id ?started ?ended ?total ?slowest WHERE { GRAPH ?g {
  ?run a cnnprov:TrainingRun ; cnnprov:runId ?run_id ; cnnprov:epochCount ?started ;
       cnnprov:completedEpochCount ?ended ; cnnprov:epochSecondsTotal ?total .
  OPTIONAL { ?run cnnprov:slowestEpochSeconds ?slowest } } }"""


def expected_epoch_statistics(store: ProvStore) -> dict[str, dict]:
    epochs: dict[str, dict[int, float | None]] = {}
    for row in store.sparql(EPOCHS).to_dicts():
        epochs.setdefault(row["run_id"], {})[row["index"]] = row["seconds"]
    expected = {}
    for run_id, by_index in epochs.items():
        ended = [seconds for seconds in by_index.values() if seconds is not None]
        expected[run_id] = {
            "started": len(by_index), "ended": len(ended), "total": sum(ended), "slowest": max(ended, default=None)
        }
    return expected


def assert_epoch_statistics_agree(store: ProvStore) -> dict[str, dict]:
    rows = store.sparql(STATISTICS).to_dicts()
    recorded = {row.pop("run_id"): row for row in rows}
    assert len(recorded) == len(rows), "a run holds an epoch statistic twice: an update left an old value"
    expected = expected_epoch_statistics(store)
    assert recorded.keys() == expected.keys()
    for run_id, row in recorded.items():
        want = expected[run_id]
        assert (row["started"], row["ended"]) == (want["started"], want["ended"])
        assert row["total"] == pytest.approx(want["total"])
        assert row["slowest"] == pytest.approx(want["slowest"])
    return recorded


def test_each_runs_epoch_statistics_agree_with_its_epochs_and_feed_runs_and_epoch_times(sweep_store):
    recorded = assert_epoch_statistics_agree(sweep_store)
    listed = {row["run_id"]: row["epochs"] for row in sweep_store.runs()}
    assert listed == {run_id: row["started"] for run_id, row in recorded.items()} == dict.fromkeys(recorded, 2)
    for row in sweep_store.query("epoch-times").to_dicts():
        want = recorded[row["run_id"]]
        assert (row["epochs"], row["slowest_s"]) == (want["ended"], pytest.approx(want["slowest"]))
        assert row["total_s"] == pytest.approx(want["total"])
        assert row["mean_s"] == pytest.approx(want["total"] / want["ended"])


def test_a_resumed_run_counts_each_epoch_once_and_an_epoch_in_progress_as_started(tmp_path):
    path = tmp_path / "provenance"
    first = RunRecorder(path)
    first.start()
    first.epoch_started(0, when=100.0)
    first.epoch_ended(0, when=100.5)
    first.epoch_started(1, when=101.0)
    first.close()  # interrupted in epoch 1

    store = ProvStore(path)
    (row,) = store.sparql(STATISTICS).to_dicts()
    assert (row["started"], row["ended"], row["total"], row["slowest"]) == (2, 1, 0.5, 0.5)
    assert store.runs().column("epochs") == [2]

    second = RunRecorder(path, run_id=first.run_id)
    second.start()
    second.epoch_started(1, when=200.0)  # re-run: one activity, its first start kept
    second.epoch_ended(1, when=203.0)
    second.epoch_started(2, when=203.0)
    second.epoch_ended(2, when=204.0)
    second.finish()
    second.close()
    recorded = assert_epoch_statistics_agree(store)
    assert recorded[first.run_id] == {"started": 3, "ended": 3, "total": 0.5 + 102.0 + 1.0, "slowest": 102.0}


def test_a_crashed_runs_summaries_are_rewritten_from_its_values_by_the_next_writer(tmp_path):
    """A kill between a write of values and the update of their summaries leaves summaries behind
    the values; the next writer that opens the store finds the run crashed and folds them again."""
    import socket
    import subprocess
    import sys

    import pyoxigraph as ox

    from cnnprov.storage.local import wait_released

    path = tmp_path / "provenance"
    recorder = RunRecorder(path, name="killed", serve_reads=False)
    recorder.start()
    for epoch, (loss, acc) in enumerate([(0.9, 0.5), (0.4, 0.9)]):
        recorder.epoch_started(epoch)
        recorder.log_metrics({"val_loss": loss, "val_acc": acc, "epoch": epoch}, step=epoch)
        recorder.epoch_ended(epoch)
    recorder.finish("success")
    recorder.close(wait=True)
    wait_released(path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run, graph = recorder.run.value, recorder.bundle.value
    store = ox.Store(str(path))  # what a kill leaves: a run still "running", summaries behind its values
    store.update(
        f"""DELETE {{ GRAPH <{graph}> {{ <{run}> <{CP}status> ?s ; <{CP}processId> ?p ; <{CP}hostname> ?h ;
                                        <http://www.w3.org/ns/prov#endedAtTime> ?e }} }}
            WHERE {{ GRAPH <{graph}> {{ <{run}> <{CP}status> ?s ; <{CP}processId> ?p ; <{CP}hostname> ?h ;
                                        <http://www.w3.org/ns/prov#endedAtTime> ?e }} }} ;
            INSERT DATA {{ GRAPH <{graph}> {{ <{run}> <{CP}status> "running" ; <{CP}processId> {dead.stdout.strip()} ;
                                             <{CP}hostname> "{socket.gethostname()}" }} }} ;
            DELETE {{ GRAPH <{graph}> {{ ?s <{CP}maxValue> ?v ; <{CP}valueCount> ?n }} }}
            INSERT {{ GRAPH <{graph}> {{ ?s <{CP}maxValue> 0.5 ; <{CP}valueCount> 1 }} }}
            WHERE {{ GRAPH <{graph}> {{ ?s a <{CP}MetricSummary> ; <{CP}maxValue> ?v ; <{CP}valueCount> ?n }} }}"""
    )
    del store
    assert ProvStore(path).query("best-runs", metric="val_acc").to_dicts()[0]["best"] == 0.5  # behind
    cnnprov.open_session(path, serve_reads=False).close(wait=True)  # the next writer to open the store
    store = ProvStore(path)
    assert store.runs().to_dicts()[0]["status"] == "crashed"
    assert store.query("best-runs", metric="val_acc").to_dicts()[0]["best"] == 0.9  # what the values say
    assert recorded_summaries(store) == expected_summaries(store)


def test_summaries_are_rewritten_at_an_epoch_start_at_most_once_a_while_and_always_at_a_stage_end(monkeypatch):
    """Short epochs (a sweep of small models) would rewrite summaries as often as they write their own
    records, at the same cost: an epoch start rewrites the measures' summaries only once
    SUMMARY_INTERVAL_S has passed (the run's few epoch statistics every time)."""
    from pyoxigraph import NamedNode

    from cnnprov.capture import conversion
    from cnnprov.capture.conversion import MetricConverter, MetricRow, SummariesDue
    from cnnprov.storage.write_items import Update

    run, bundle = NamedNode("https://example.org/run"), NamedNode("https://example.org/bundle")
    converter = MetricConverter(run, bundle, "https://example.org/")
    converter(MetricRow({"val_loss": 0.5, "epoch": 0}, 0, 1.0, 0, False))
    update = converter(SummariesDue((1, 0, 0.0, None)))  # an epoch start within the interval:
    assert isinstance(update, Update) and "epochCount" in update.sparql  # its epoch statistics,
    assert "val_loss" not in update.sparql  # the measures' summaries later
    update = converter(SummariesDue((1, 1, 0.1, 0.1), now=True))  # a stage's end, a writer's close
    assert isinstance(update, Update) and "val_loss" in update.sparql
    converter(MetricRow({"val_loss": 0.25, "epoch": 1}, 1, 2.0, 1, False))
    monkeypatch.setattr(conversion, "SUMMARY_INTERVAL_S", 0.0)  # epochs longer than the interval
    update = converter(SummariesDue((2, 1, 0.1, 0.1)))
    assert isinstance(update, Update) and "0.25" in update.sparql


KILLED_BETWEEN_REWRITES = """
import sys
from cnnprov import RunRecorder
recorder = RunRecorder({path!r}, name="killed", serve_reads=False)
recorder.start()
for epoch in range(4):  # epochs far shorter than SUMMARY_INTERVAL_S: their summaries wait
    recorder.epoch_started(epoch)
    for step in range(3):
        loss = 1.0 / (1 + step + 3 * epoch)
        recorder.log_metrics({{"loss": loss, "epoch": epoch}}, step=step + 3 * epoch, per_step=True)
    recorder.log_metrics({{"val_loss": 1.0 - epoch / 10, "epoch": epoch}}, step=3 * epoch + 2)
    recorder.epoch_ended(epoch)
recorder.epoch_started(4)  # epochs 0-3 durable
print("EPOCH-4-UNDERWAY", recorder.run_id, flush=True)
sys.stdin.read()
"""


def test_a_run_killed_between_summary_rewrites_has_them_put_right_by_the_next_writer(tmp_path):
    import signal
    import subprocess
    import sys

    from cnnprov.storage.local import wait_released

    path = tmp_path / "provenance"
    script = KILLED_BETWEEN_REWRITES.format(path=str(path))
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("EPOCH-4-UNDERWAY"), line
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    cnnprov.open_session(path, serve_reads=False).close(wait=True)  # the next writer to open the store
    wait_released(path)
    store = ProvStore(path)
    recorded = recorded_summaries(store)
    assert recorded == expected_summaries(store)
    run_id = line.split()[1]
    assert recorded[(run_id, "val_loss")]["count"] == 4 and recorded[(run_id, "loss")]["count"] == 12
    statistics = assert_epoch_statistics_agree(store)
    assert statistics[run_id]["ended"] == 4 and statistics[run_id]["started"] >= 4  # epoch 4's start may be stored
