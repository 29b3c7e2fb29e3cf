"""Pictures drawn from a store: what they show is what the queries answer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cnnprov.analysis import plots


def test_learning_curves_draw_one_line_per_run_labelled_by_what_differs(sweep_store):
    figure = plots.learning_curves(sweep_store, metric="val_acc")
    lines = figure.axes[0].get_lines()
    assert sorted(line.get_label() for line in lines) == ["dropout=0", "dropout=0.5"]
    expected = {}
    for row in sweep_store.sparql(
        """SELECT DISTINCT ?v ?name ?epoch ?value WHERE {
             ?v <http://www.w3.org/ns/mls#specifiedBy> [ <http://www.w3.org/2000/01/rdf-schema#label> "val_acc" ] ;
                <http://www.w3.org/ns/mls#hasValue> ?value ; <https://w3id.org/cnnprov/ns#atEpoch> ?epoch ;
                <http://www.w3.org/ns/prov#wasGeneratedBy> [ <https://w3id.org/cnnprov/ns#partOfRun>
                   [ <https://w3id.org/cnnprov/ns#runId> ?id ;
                     <http://www.w3.org/2000/01/rdf-schema#label> ?name ] ] }"""
    ):
        expected.setdefault(row["name"].replace("dropout=0.0", "dropout=0"), []).append((row["epoch"], row["value"]))
    for line in lines:
        want = sorted(expected[line.get_label()])
        assert list(line.get_xdata()) == [epoch for epoch, _ in want]
        assert list(line.get_ydata()) == pytest.approx([value for _, value in want])


def test_hyperparameter_effect_puts_each_run_at_its_value(sweep_store, tmp_path):
    figure = plots.hyperparameter_effect(sweep_store, "dropout", metric="val_acc")
    points = figure.axes[0].collections[0].get_offsets()
    best = {
        row["hyperparameters"].split("dropout=")[1].split(",")[0]: row["best"] for row in sweep_store.query("best-runs")
    }
    got = sorted(map(tuple, points))
    want = sorted((float(k), v) for k, v in best.items())
    assert [x for x, _ in got] == [x for x, _ in want]
    assert [y for _, y in got] == pytest.approx([y for _, y in want])
    plots.save(figure, tmp_path / "effect.svg")
    assert (tmp_path / "effect.svg").read_text().lstrip().startswith("<?xml")


def test_plot_command_writes_png_and_svg_and_explains_mistakes(sweep_store, tmp_path):
    def plot(*args):
        return subprocess.run(
            [sys.executable, "-m", "cnnprov.cli", "plot", *args, "--store", str(sweep_store.path)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )

    assert plot("learning-curves", "--metric", "val_loss").returncode == 0
    assert (tmp_path / "learning-curves.png").read_bytes().startswith(b"\x89PNG")
    assert plot("hyperparameter-effect", "--name", "dropout", "-o", str(tmp_path / "d.svg")).returncode == 0
    assert (tmp_path / "d.svg").stat().st_size > 1000
    missing_name = plot("hyperparameter-effect")
    assert missing_name.returncode == 1 and "needs --name" in missing_name.stderr
    unknown_metric = plot("learning-curves", "--metric", "no_such_metric")
    assert unknown_metric.returncode == 1 and "no_such_metric" in unknown_metric.stderr
    assert "Traceback" not in missing_name.stderr + unknown_metric.stderr
