"""Run filters (``runs --where``, ``ProvStore.runs(where=…)``): how they are read, what they select.

What a filter keeps is checked against what is known of each run, read another way (the
``hyperparameters`` query, every logged value of a metric, the runs table), on the session store of
two Lightning runs (``sweep_store``: dropout 0.0 and 0.5), on Oxigraph and on rdflib's own engine
(the same SPARQL text), and on a small store whose second run was left running by a process that
exited (it reads as crashed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator

import pytest
import rdflib

from cnnprov import ProvStore
from cnnprov.analysis.filter_syntax import Comparison, Junction, Not, parse_filter
from cnnprov.analysis.run_filter import compile_filter, lower_is_better
from cnnprov.errors import QueryError, RunFilterError, RunFilterWarning

from helpers import OxigraphServer, cli, ok


# -- 1. reading ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "offset", "expected"),
    [
        ("val_acc > ", 10, "expected a value after '>'"),
        ("val_acc > 0.95 and lr <", 23, "expected a value after '<'"),
        ("(lr < 1", 7, "expected ')'"),
        ("lr between 1 2", 13, "expected 'and' and the upper end of the range"),
        ("lr in (1, 2", 11, "expected ',' or ')'"),
        ("lr in 1", 6, "expected '(' and a list of values after 'in'"),
        ("bets(x) > 1", 0, "unknown function 'bets'"),
        ("best(x > 1", 7, "expected ')' to close 'best('"),
        ("lr >> 2", 4, "expected a value after '>', found '>'"),
        ("lr = and", 5, "quote it"),
        ("", 0, "expected a condition"),
        ("and lr = 1", 0, "expected a field"),
        ("lr 5", 3, "expected an operator"),
        ("lr < 1 lr", 7, "expected 'and', 'or' or the end of the filter"),
        ('name = "open', 7, "never ends"),
        ("lr ! 1", 3, "unexpected '!'"),
        ("lr not = 1", 7, "expected 'in', 'between', 'contains' or '~' after 'not'"),
        ("name ~ '['", 7, "not a regular expression"),
        ("started > yesterday", 10, "expected a date"),
        ("duration > soon", 11, "expected a duration"),
        ("duration ~ 5", 9, "compares text"),
        ("run.colour = red", 0, "unknown run field 'colour'"),
    ],
)
def test_a_filter_that_cannot_be_read_says_where_and_what_was_expected(text, offset, expected):
    with pytest.raises(RunFilterError) as caught:
        compile_filter(text)
    error = caught.value
    assert isinstance(error, QueryError)  # what the CLI and the API already report
    assert (error.filter, error.offset, error.column) == (text, offset, offset + 1)
    assert error.reason.startswith(expected) or expected in error.reason, error.reason
    assert str(error).splitlines() == [f"{error.reason} at column {offset + 1}", f"  {text}", "  " + " " * offset + "^"]


def test_and_binds_tighter_than_or_and_not_tightest():
    tree = parse_filter("a = 1 or b = 2 and not c = 3")
    assert isinstance(tree, Junction) and tree.op == "or"
    first, second = tree.operands
    assert isinstance(first, Comparison) and first.field.name == "a"
    assert isinstance(second, Junction) and second.op == "and"
    assert isinstance(second.operands[1], Not) and second.operands[1].operand.field.name == "c"
    grouped = parse_filter("(a = 1 OR b = 2) And c = 3")  # keywords in any case
    assert isinstance(grouped, Junction) and grouped.op == "and"
    assert isinstance(grouped.operands[0], Junction) and grouped.operands[0].op == "or"


def test_values_are_numbers_booleans_or_text_and_fields_take_prefixes_and_functions():
    tree = parse_filter('x in (1, 2.5, -1e-3, adam, "3", TRUE, "true")')
    assert isinstance(tree, Comparison)
    assert [(v.value, v.quoted) for v in tree.values] == [
        (1, False), (2.5, False), (-0.001, False), ("adam", False), ("3", True), (True, False), ("true", True)
    ]
    fields = {
        text: (f.kind, f.name, f.summary)
        for text in ("lr", "hp.lr", "hp('my lr')", "metric.val_acc", "best(val_loss)", 'last("val acc")',
                     "min(val_acc)", "max(val_loss)", "run.name")
        for f in [parse_filter(f"{text} = 1").field]  # type: ignore[union-attr]
    }
    assert fields == {
        "lr": ("name", "lr", None), "hp.lr": ("hp", "lr", None), "hp('my lr')": ("hp", "my lr", None),
        "metric.val_acc": ("metric", "val_acc", "best"), "best(val_loss)": ("metric", "val_loss", "best"),
        'last("val acc")': ("metric", "val acc", "last"), "min(val_acc)": ("metric", "val_acc", "min"),
        "max(val_loss)": ("metric", "val_loss", "max"), "run.name": ("run", "name", None),
    }


def test_best_is_the_lowest_for_losses_and_errors_and_the_highest_otherwise():
    lowest = ("val_loss", "train_loss_step", "top1_error", "val_mse", "test/mae", "nll")
    highest = ("val_acc", "f1", "auc", "val_accuracy", "precision", "measure")
    assert [m for m in lowest if not lower_is_better(m)] == [] and [m for m in highest if lower_is_better(m)] == []


# -- 2. what a filter keeps, on a store of real training ------------------------------------------
@pytest.fixture(scope="module")
def known(sweep_store) -> dict[str, dict]:
    """What is known of each run, read without the filter: runs table, settings, every value logged."""
    runs = {row["run_id"]: dict(row) for row in sweep_store.runs()}
    for row in sweep_store.query("hyperparameters", include="all"):
        runs[row["run_id"]][row["name"]] = row["value"]
    for run_id, run in runs.items():
        for metric in ("val_acc", "val_loss"):
            values = [row["value"] for row in sweep_store.metric_values(run_id, metric)]
            run[f"max {metric}"], run[f"min {metric}"], run[f"last {metric}"] = max(values), min(values), values[-1]
        run["duration"] = (run["ended"] - run["started"]).total_seconds()
    assert {run["dropout"] for run in runs.values()} == {0.0, 0.5}
    assert len({run["max val_acc"] for run in runs.values()}) == 2, "the runs must differ to tell them apart"
    return runs


@pytest.fixture(scope="module")
def rdflib_dataset(sweep_store) -> rdflib.Dataset:
    dataset = rdflib.Dataset(default_union=True)
    dataset.parse(data=sweep_store.export("nquads"), format="nquads")
    return dataset


def _between(runs: dict[str, dict], key: str) -> float:
    low, high = sorted(run[key] for run in runs.values())
    return (low + high) / 2


def cases(runs: dict[str, dict]) -> list[tuple[str, object]]:
    """(filter, which runs it keeps) over the known runs."""
    acc, loss, last = _between(runs, "max val_acc"), _between(runs, "min val_loss"), _between(runs, "last val_acc")
    low = _between(runs, "min val_acc")
    first = min(runs.values(), key=lambda run: run["started"])
    return [
        ("dropout = 0.5", lambda r: r["dropout"] == 0.5),
        ("dropout == 0.5", lambda r: r["dropout"] == 0.5),
        ("dropout != 0.5", lambda r: r["dropout"] != 0.5),
        ("not (dropout = 0.5)", lambda r: r["dropout"] != 0.5),
        ("dropout < 0.25", lambda r: r["dropout"] < 0.25),
        ("dropout <= 0.0", lambda r: r["dropout"] <= 0.0),
        ("dropout > 0", lambda r: r["dropout"] > 0),
        ("dropout >= 0.5", lambda r: r["dropout"] >= 0.5),
        ("dropout in (0.5, 0.7)", lambda r: r["dropout"] in (0.5, 0.7)),
        ("dropout not in (0.5)", lambda r: r["dropout"] not in (0.5,)),
        ("dropout between 0.1 and 0.6", lambda r: 0.1 <= r["dropout"] <= 0.6),
        ("dropout not between 0.1 and 0.6", lambda r: not 0.1 <= r["dropout"] <= 0.6),
        ("hp.dropout = 0.0 and lr = 0.05", lambda r: r["dropout"] == 0.0 and r["lr"] == 0.05),
        ("batch_size = 16.0", lambda r: r["batch_size"] == 16),  # numbers compare as numbers
        ("optimizer.lr < 0.1 and trainer.max_epochs = 2", lambda r: r["optimizer.lr"] < 0.1),
        ("optimizer.nesterov = false", lambda r: r["optimizer.nesterov"] is False),
        ("optimizer.nesterov = true", lambda r: r["optimizer.nesterov"] is True),
        (f"val_acc > {acc}", lambda r: r["max val_acc"] > acc),  # a bare metric name: its best
        (f"metric.val_acc < {acc}", lambda r: r["max val_acc"] < acc),
        (f"best(val_loss) < {loss}", lambda r: r["min val_loss"] < loss),  # a loss is best at its lowest
        (f"min(val_acc) <= {low}", lambda r: r["min val_acc"] <= low),
        (f"last(val_acc) >= {last}", lambda r: r["last val_acc"] >= last),
        (f"(dropout = 0.5 or val_acc > {acc}) and status = success",
         lambda r: (r["dropout"] == 0.5 or r["max val_acc"] > acc) and r["status"] == "success"),
        ("status = success", lambda r: r["status"] == "success"),
        ("status in (failed, crashed)", lambda r: r["status"] in ("failed", "crashed")),
        ("epochs = 2", lambda r: r["epochs"] == 2),
        ("epochs > 2", lambda r: r["epochs"] > 2),
        (f"name = '{first['name']}'", lambda r: r["name"] == first["name"]),
        (f"name contains '{first['name'].upper()}'", lambda r: r["name"] == first["name"]),  # ignores case
        ('name ~ "^DROPOUT=0\\.5$"', lambda r: r["name"] == "dropout=0.5"),
        (f"id = {first['run_id']}", lambda r: r is first),
        (f"id ~ '^{first['run_id'][:8]}'", lambda r: r is first),
        (f"started > {first['started'].isoformat()}", lambda r: r["started"] > first["started"]),
        (f"ended >= {first['ended'].date().isoformat()}", lambda r: True),
        ("ended < 2000-01-01", lambda r: False),
        (f"duration > {_between(runs, 'duration')}", lambda r: r["duration"] > _between(runs, "duration")),
        ("duration between 0 and 1d", lambda r: 0 <= r["duration"] <= 86400),
        ("duration < 0.001", lambda r: r["duration"] < 0.001),
        ("nosuch = 1", lambda r: False),  # a field no run has fails every comparison ...
        ("not (nosuch = 1)", lambda r: True),  # ... so its negation holds
        ("nosuch != 1", lambda r: False),
        ("dropout = adam", lambda r: False),  # a number is no text
        ("dropout != adam", lambda r: True),
    ]


def _ids(runs: dict[str, dict], keeps) -> set[str]:
    return {run_id for run_id, run in runs.items() if keeps(run)}


def test_each_filter_keeps_exactly_the_runs_it_describes_on_oxigraph_and_rdflib(sweep_store, known, rdflib_dataset):
    sizes = set()
    with sweep_store:
        for where, keeps in cases(known):
            expected = _ids(known, keeps)
            with pytest.warns(RunFilterWarning) if where.startswith(("nosuch", "not (nosuch")) else _no_warning():
                oxigraph = {row["run_id"] for row in sweep_store.runs(where=where)}
            other = {str(row.run_id) for row in rdflib_dataset.query(compile_filter(where).sparql)}
            assert (oxigraph, other) == (expected, expected), where
            sizes.add(len(expected))
    assert sizes == {0, 1, 2}  # the cases tell runs apart, keep none and keep all


@contextlib.contextmanager
def _no_warning() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunFilterWarning)
        yield
    assert [str(w.message) for w in caught if issubclass(w.category, RunFilterWarning)] == []


def test_a_sparql_server_keeps_the_same_runs(sweep_store, known, tmp_path):
    """The same text on a real Oxigraph server (``oxigraph serve``) holding the same records."""
    import pyoxigraph as ox

    from cnnprov.storage.remote import RemoteStore

    server = OxigraphServer(tmp_path / "oxigraph").start()
    try:
        RemoteStore(server.url).load(sweep_store.export("nquads"), format=ox.RdfFormat.N_QUADS)
        remote = ProvStore(server.url)
        sizes = set()
        for where, keeps in cases(known):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RunFilterWarning)
                shared = {row["run_id"] for row in remote.runs(where=where)}
            assert shared == _ids(known, keeps), where
            sizes.add(len(shared))
        assert sizes == {0, 1, 2}
    finally:
        server.kill()


def test_runs_keeps_its_columns_and_order_under_a_filter(sweep_store):
    every = sweep_store.runs()
    kept = sweep_store.runs(where="epochs >= 0")
    assert (kept.columns, kept.rows) == (every.columns, every.rows)
    assert sweep_store.runs(where="  ").rows == every.rows  # an empty filter box keeps every run
    assert len(sweep_store.runs(where="epochs < 0")) == 0


def test_a_field_no_run_has_gives_no_runs_and_a_hint_that_names_the_close_ones(sweep_store):
    with pytest.warns(RunFilterWarning, match=r"no run has a hyperparameter or metric 'dropuot' \(did you mean dropout"):  # noqa: E501
        assert len(sweep_store.runs(where="dropuot = 0.5")) == 0
    with pytest.warns(RunFilterWarning, match=r"no run has a metric 'val_ac' \(did you mean val_acc"):
        assert len(sweep_store.runs(where="last(val_ac) > 0")) == 0
    with pytest.warns(RunFilterWarning, match=r"no run shows the status 'succes'"):
        assert len(sweep_store.runs(where="status = succes")) == 0


def test_filter_fields_lists_what_some_run_has(sweep_store):
    fields = sweep_store.filter_fields()
    assert {"dropout", "lr", "batch_size", "optimizer.lr", "trainer.max_epochs"} <= set(fields.hyperparameters)
    assert {"val_acc", "val_loss"} <= set(fields.metrics)
    assert "val_acc" not in fields.hyperparameters and "dropout" not in fields.metrics
    assert fields.run == ("id", "name", "status", "started", "ended", "epochs", "duration")


# -- 3. user text never becomes SPARQL ---------------------------------------------------------------
def test_values_and_names_that_look_like_sparql_are_compared_as_text(sweep_store, known):
    before = sweep_store.export("nquads")
    name = next(iter(known.values()))["name"]
    attempts = [
        'name = "x\\" } ; DROP ALL ; #"',
        f'name = "{name}\\" || true || \\""',  # pasted into the query, this would keep every run
        f"name = '{name}\" || true || \"'",
        'hp("lr\\" } UNION { ?run ?p ?o") = 0.05',
        "name contains '\" || true || \"'",
    ]
    for where in attempts:
        compiled = compile_filter(where)
        assert "true ||" not in compiled.text and "DROP" not in compiled.text and "UNION" not in compiled.text
        with pytest.warns(RunFilterWarning) if where.startswith("hp") else _no_warning():
            assert len(sweep_store.runs(where=where)) == 0, where
    assert sweep_store.export("nquads") == before
    compiled = compile_filter('name = "x\\" } ; DROP ALL ; #"')
    assert [term.value for term in compiled.terms.values()] == ["x\" } ; DROP ALL ; #"]


# -- 4. status as runs shows it ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def left_open(tmp_path_factory) -> ProvStore:
    """A finished run and one whose process exited without ending it, with text settings and a
    setting named like a metric; recorded by RunRecorder in a process of its own."""
    path = tmp_path_factory.mktemp("left-open") / "provenance"
    script = textwrap.dedent(
        f"""
        from cnnprov import RunRecorder
        done = RunRecorder({str(path)!r}, name="done")
        done.start()
        done.log_hyperparameters({{"optimizer": "adam", "batch_size": 32, "val_acc": 0.5}})
        done.epoch_started(0)
        done.log_metrics({{"val_acc": 0.9, "epoch": 0}}, step=0)
        done.epoch_ended(0)
        done.finish("success")
        done.close()
        idle = RunRecorder({str(path)!r}, name="no-epochs")
        idle.start()
        idle.finish("failed")
        idle.close()
        left = RunRecorder({str(path)!r}, name="left-open")
        left.start()
        left.log_hyperparameters({{"optimizer": "sgd", "batch_size": 64}})
        left.epoch_started(0)
        # no finish(): the process exits with the run still recorded as running
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    return ProvStore(path)


def test_status_in_a_filter_reads_as_runs_shows_it(left_open):
    shown = {row["name"]: row["status"] for row in left_open.runs()}
    stored = {row["s"] for row in left_open.sparql("SELECT ?s WHERE { ?r <https://w3id.org/cnnprov/ns#status> ?s }")}
    assert shown == {"done": "success", "no-epochs": "failed", "left-open": "crashed"} and "running" in stored

    def names(where: str) -> set[str]:
        return {row["name"] for row in left_open.runs(where=where)}

    assert names("status = crashed") == {"left-open"}
    assert names("status = running") == set()
    assert names("status != crashed") == {"done", "no-epochs"}
    assert names("status in (running, crashed, failed)") == {"left-open", "no-epochs"}
    assert names("not status = success") == {"left-open", "no-epochs"}
    assert names("status ~ '^crash'") == {"left-open"}
    # rdflib, given the runs that read as crashed, agrees
    crashed = [row["run_id"] for row in left_open.runs() if row["status"] == "crashed"]
    dataset = rdflib.Dataset(default_union=True)
    dataset.parse(data=left_open.export("nquads"), format="nquads")
    for where in ("status = crashed", "status in (running, crashed, failed)", "not status = success", "epochs = 0"):
        other = {str(row.run_id) for row in dataset.query(compile_filter(where, crashed=crashed).sparql)}
        assert other == {row["run_id"] for row in left_open.runs(where=where)}, where


def test_a_run_without_epochs_has_zero_epochs_as_runs_shows(left_open):
    shown = {row["name"]: row["epochs"] for row in left_open.runs()}
    assert shown["no-epochs"] == 0 and shown["done"] == 1
    assert {row["name"] for row in left_open.runs(where="epochs = 0")} == {"no-epochs"}
    assert {row["name"] for row in left_open.runs(where="epochs < 1")} == {"no-epochs"}
    assert {row["name"] for row in left_open.runs(where="epochs > 0")} == {row for row, n in shown.items() if n > 0}


def test_text_settings_and_a_name_both_setting_and_metric(left_open):
    def names(where: str) -> set[str]:
        return {row["name"] for row in left_open.runs(where=where)}

    assert names("optimizer in (adam, sgd)") == {"done", "left-open"}  # no-epochs has no optimizer
    assert names("optimizer = adam") == {"done"}
    assert names("optimizer contains GD") == {"left-open"}
    assert names("optimizer > b") == {"left-open"}  # text compares as text
    assert names("batch_size >= 64 or optimizer = adam") == {"done", "left-open"}
    with pytest.warns(RunFilterWarning, match="'val_acc' is a hyperparameter and a metric"):
        assert names("val_acc = 0.5") == {"done"}  # the run's setting ...
    assert names("metric.val_acc > 0.8") == {"done"}  # ... unless the metric is asked for
    assert names("best(val_acc) > 0.8 and hp.val_acc < 0.8") == {"done"}


# -- 5. the command line --------------------------------------------------------------------------------
def test_runs_where_on_the_command_line(sweep_store, known):
    (half,) = [run_id for run_id, run in known.items() if run["dropout"] == 0.5]
    where = "dropout = 0.5 and status = success"
    kept = json.loads(ok("runs", "--where", where, "-f", "json", "--store", sweep_store.path))
    assert [run["run_id"] for run in kept] == [half]
    assert set(kept[0]) == {"run_id", "name", "status", "started", "ended", "epochs", "stages"}

    refused = cli("runs", "--where", "dropout >", "--store", sweep_store.path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-3:] == [
        "cnnprov: error: expected a value after '>' at column 10", "  dropout >", "           ^"
    ]

    hinted = cli("runs", "--where", "dropuot = 0.5", "-f", "json", "--store", sweep_store.path)
    assert hinted.returncode == 0 and json.loads(hinted.stdout) == []
    assert "cnnprov: note: no run has a hyperparameter or metric 'dropuot' (did you mean dropout" in hinted.stderr


def test_runs_fields_and_help_teach_the_language(sweep_store):
    fields = ok("runs", "--fields", "--store", sweep_store.path).splitlines()
    assert fields[0] == "run: id, name, status, started, ended, epochs, duration"
    assert "dropout" in fields[1].split(": ", 1)[1].split(", ") and fields[1].startswith("hyperparameters:")
    assert "val_acc" in fields[2].split(": ", 1)[1].split(", ") and fields[2].startswith("metrics:")
    help_text = ok("runs", "--help")
    for taught in ("--where", "between", "best(M)", "not x = 1", 'cnnprov runs --where "val_acc > 0.95'):
        assert taught in help_text, taught


def test_a_date_without_a_zone_is_utc():
    compiled = compile_filter("started > 2026-01-31T09:30")
    (term,) = compiled.terms.values()
    assert dt.datetime.fromisoformat(term.value) == dt.datetime(2026, 1, 31, 9, 30, tzinfo=dt.timezone.utc)
