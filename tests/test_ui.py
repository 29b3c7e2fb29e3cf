"""The dashboard (`cnnprov ui`), in a real headless browser over stores recorded by real training."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import rdflib

from cnnprov import ProvStore
from cnnprov.demo import run_sweep
from cnnprov.ui.server import Dashboard

from browser import screenshot_is_not_blank, start_browser, wait_until
from helpers import PacedTraining, cli_env

#: three runs: two differ only in dropout, two only in the learning rate
CONFIGS = [{"dropout": 0.0, "lr": 0.1}, {"dropout": 0.5, "lr": 0.1}, {"dropout": 0.0, "lr": 0.03}]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ProvStore:
    path = tmp_path_factory.mktemp("ui") / "provenance"
    run_sweep(path, CONFIGS, max_epochs=2, limit=400, batch_size=16, progress=None)
    return ProvStore(path)


@pytest.fixture(scope="module")
def dashboard(store):
    served = Dashboard(store.location)
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser(dashboard):
    session = start_browser()
    session.get(dashboard.url)  # the token, once: the dashboard keeps it in a cookie
    yield session
    session.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def run_ids(store: ProvStore) -> list[str]:
    return [row["run_id"] for row in store.runs()]


def settings(store: ProvStore) -> dict[str, dict[str, object]]:
    """Each run's own hyperparameters, read by the bundled query (not through the dashboard)."""
    found: dict[str, dict[str, object]] = {}
    for row in store.query("hyperparameters"):
        found.setdefault(row["run_id"], {})[row["name"]] = row["value"]
    return found


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# -- who may read ---------------------------------------------------------------------------------
def test_a_request_without_the_token_or_from_another_host_is_refused(dashboard):
    assert get(f"{dashboard.address}/")[0] == 403
    assert get(f"{dashboard.address}/?token=wrong")[0] == 403
    assert get(f"{dashboard.address}/api/curves?run=x")[0] == 403
    status, headers, _ = get(dashboard.url, {"Origin": "http://evil.example"})
    assert status == 200
    assert not any(name.lower().startswith("access-control") for name in headers)  # no CORS
    assert "SameSite=Strict" in headers.get("set-cookie", "")
    # a name that resolves to 127.0.0.1 (DNS rebinding) still names another host
    assert get(dashboard.url, {"Host": f"rebind.example:{dashboard.port}"})[0] == 403
    assert get(f"{dashboard.address}/", {"Authorization": f"Bearer {dashboard.token}"})[0] == 200


def test_what_a_page_shows_cannot_run_in_the_browser_nor_reach_files_or_other_hosts(tmp_path):
    from cnnprov import RunRecorder

    payload = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    recorder = RunRecorder(tmp_path / "provenance", name=payload)
    recorder.start()
    recorder.log_hyperparameters({"note": payload, "lr": 0.1})
    recorder.epoch_started(0)
    recorder.log_metrics({"val_acc": 0.5}, step=0)
    recorder.epoch_ended(0)
    recorder.finish("success")
    recorder.close()
    served = Dashboard(tmp_path / "provenance")
    served.start()
    try:
        bearer = {"Authorization": f"Bearer {served.token}"}
        for page in (
            "/",
            "/explore",
            f"/run/{recorder.run_id}",
            f"/compare?run={recorder.run_id}&run={recorder.run_id}",
            f"/?where={urllib.parse.quote(payload)}",
        ):
            status, _, body = get(f"{served.address}{page}", bearer)
            assert status in (200, 400) and b"<script>alert" not in body and b"<img src=x" not in body, page
        assert b"&lt;script&gt;alert(2)" in get(f"{served.address}/", bearer)[2]  # shown, escaped
        for path in ("/static/..%2fapp.py", "/static/../app.py", f"/run/{recorder.run_id}/download/..%2f..%2fapp.py"):
            assert get(f"{served.address}{path}", bearer)[0] == 404, path
        federated = "SELECT * WHERE { SERVICE <http://127.0.0.1:9/sparql> { ?s ?p ?o } }"
        status, _, body = get(f"{served.address}/sparql.csv?text={urllib.parse.quote(federated)}", bearer)
        assert status == 400 and b"SERVICE" in body
        update = "INSERT DATA { <urn:a> <urn:b> <urn:c> }"
        assert get(f"{served.address}/sparql.csv?text={urllib.parse.quote(update)}", bearer)[0] == 400
        assert len(ProvStore(tmp_path / "provenance").sparql("SELECT * WHERE { <urn:a> ?p ?o }")) == 0
    finally:
        served.stop()


def test_cnnprov_ui_prints_a_url_with_the_token_and_serves_it_without_torch(store):
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "cnnprov.cli", "ui", "--store", str(store.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        line = process.stdout.readline()
        url = line.strip().rpartition(" at ")[2]
        assert url.startswith("http://127.0.0.1:") and "?token=" in url, line
        status, _, body = get(url)
        assert status == 200 and b'id="runs"' in body
        assert get(url.partition("?")[0])[0] == 403
        address = url.partition("/?")[0]
        for page in ("/explore", f"/run/{run_ids(store)[0]}", "/sparql?query=runs"):
            assert get(f"{address}{page}", {"Authorization": f"Bearer {url.rpartition('=')[2]}"})[0] == 200, page
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    imported = [line.rsplit("|", 1)[-1].strip() for line in errors.splitlines() if line.startswith("import time:")]
    assert "starlette" in imported and "pyoxigraph" in imported  # the check sees what was imported
    assert [m for m in imported if m.split(".")[0] in {"torch", "lightning", "lightning_fabric"}] == []


# -- the runs table -------------------------------------------------------------------------------
def test_the_table_lists_every_run_and_folds_the_settings_equal_in_all(browser, dashboard, store, shots):
    browser.get(f"{dashboard.address}/")
    rows = wait_until(lambda: browser.find_elements("css selector", "#runs tbody tr"), what="the runs table")
    assert sorted(row.get_attribute("data-run") for row in rows) == sorted(run_ids(store))
    headers = [th.text for th in browser.find_elements("css selector", "#runs thead th.hp")]
    assert sorted(headers) == ["dropout", "lr"]  # the only settings that differ among the three
    screenshot_is_not_blank(browser, shots / "runs.png")

    browser.find_element("id", "show-all").click()
    browser.find_element("id", "apply").click()
    wait_until(lambda: browser.find_elements("css selector", "#runs thead th.constant"), what="the folded columns")
    shown = {th.text for th in browser.find_elements("css selector", "#runs thead th.hp")}
    recorded = set().union(*(values.keys() for values in settings(store).values()))
    assert recorded <= shown and len(shown) > 2  # (a setting of None, such as step_size, shows empty)


def test_a_filter_narrows_the_table_and_a_bad_one_points_at_its_column(browser, dashboard, store):
    values = settings(store)
    browser.get(f"{dashboard.address}/")
    box = wait_until(lambda: browser.find_element("id", "where"))
    box.send_keys("dropout > 0.1 or lr < 0.05")
    browser.find_element("id", "apply").click()
    wait_until(lambda: "where=" in browser.current_url, what="the filtered page")
    shown = {row.get_attribute("data-run") for row in browser.find_elements("css selector", "#runs tbody tr")}
    assert shown == {run for run, v in values.items() if v["dropout"] > 0.1 or v["lr"] < 0.05}
    assert 0 < len(shown) < len(values)

    box = browser.find_element("id", "where")
    box.clear()
    box.send_keys("val_acc > and lr < 0.05")
    browser.find_element("id", "apply").click()
    error = wait_until(lambda: browser.find_element("id", "filter-error").text, what="the filter's error")
    assert "column 11" in error and "^" in error
    rows = browser.find_elements("css selector", "#runs tbody tr")
    assert len(rows) == len(values)  # the table stays, unfiltered, under the error

    browser.get(f"{dashboard.address}/?where=no_such_setting+%3E+1")
    assert "no_such_setting" in browser.find_element("class name", "hint").text
    assert not browser.find_elements("css selector", "#runs tbody tr")


def test_the_table_sorts_by_a_column(browser, dashboard, store):
    browser.get(f"{dashboard.address}/")
    header = wait_until(lambda: browser.find_element("xpath", "//th[starts-with(., 'best val_acc')]"))
    header.click()
    header.click()  # descending
    cells = [float(td.text) for td in browser.find_elements("css selector", "#runs tbody td.best")]
    assert cells == sorted(cells, reverse=True)
    expected = sorted(row["best"] for row in store.query("best-runs"))[::-1]
    assert cells == pytest.approx(expected, rel=1e-3)


# -- comparing ------------------------------------------------------------------------------------
def test_the_compare_view_shows_exactly_the_settings_that_differ(browser, dashboard, store, shots):
    values = settings(store)
    by_dropout = sorted(run_ids(store), key=lambda run: (values[run]["lr"] != 0.1, values[run]["dropout"]))
    first, second = by_dropout[0], by_dropout[1]  # same lr, dropout 0.0 and 0.5
    browser.get(f"{dashboard.address}/compare?run={first}&run={second}")
    rows = wait_until(lambda: browser.find_elements("css selector", "#differences tbody tr"), what="the differences")
    found = {tuple(td.text for td in row.find_elements("tag name", "td")) for row in rows}
    assert ("run", "dropout", "0", "0.5") in found
    assert ("layer/8 (DropoutLayer)", "dropoutRate", "0", "0.5") in found
    assert all(cells[2] != cells[3] for cells in found)  # nothing equal is shown
    assert not any(cells[1] in ("lr", "optimizer.lr") for cells in found)
    charts = wait_until(
        lambda: [
            c for c in browser.find_elements("css selector", ".side-by-side .chart") if c.get_attribute("data-drawn")
        ],
        what="the side-by-side curves",
    )
    assert len(charts) == 2
    used = browser.find_elements("css selector", "#resources tbody tr")
    assert [row.find_elements("tag name", "td")[1].text for row in used] == ["2", "2"]  # epochs with their use
    kept = browser.find_elements("css selector", "#kept tbody tr")
    assert len(kept) == 2 and all(len(row.find_elements("class name", "hash")[0].text) == 64 for row in kept)
    screenshot_is_not_blank(browser, shots / "compare.png")


# -- across runs ----------------------------------------------------------------------------------
def test_parallel_coordinates_draw_one_line_per_run(browser, dashboard, store, shots):
    browser.get(f"{dashboard.address}/explore")
    wait_until(
        lambda: browser.find_element("id", "parallel").get_attribute("data-drawn"), what="the parallel coordinates"
    )
    chart = browser.find_element("id", "parallel")
    ids = run_ids(store)
    assert chart.get_attribute("data-runs") == str(len(ids))
    # each run is one line: its points (one per axis) between two gaps, across the SVG traces
    segments = browser.execute_script(
        "return document.getElementById('parallel').data.map(t => t.y.filter(y => y === null).length)"
    )
    assert sum(segments) == len(ids)
    assert len(browser.find_elements("css selector", "#parallel svg .scatterlayer path.js-line")) == len(segments)
    axes = browser.execute_script("return document.getElementById('parallel').layout.shapes.length")
    assert axes == 3  # dropout, lr, best val_acc
    browser.find_element("id", "interactive").click()  # Plotly's brushable parcoords (WebGL)
    wait_until(lambda: browser.find_element("id", "parallel").get_attribute("data-drawn"), what="the WebGL drawing")
    counts = browser.execute_script(
        "return document.getElementById('parallel').data[0].dimensions.map(d => d.values.length)"
    )
    assert counts == [len(ids)] * 3
    browser.back()
    wait_until(lambda: browser.find_element("id", "scatter").get_attribute("data-drawn"), what="the scatter")
    assert "needs at least" in browser.find_element("tag name", "main").text  # three runs say nothing of importance
    assert "Spearman" in browser.find_element("class name", "methods").text
    screenshot_is_not_blank(browser, shots / "explore.png")


# -- one run ----------------------------------------------------------------------------------------
def test_a_runs_page_shows_its_record_and_downloads_it(browser, dashboard, store, shots):
    run = run_ids(store)[0]
    browser.get(f"{dashboard.address}/run/{run[:8]}")
    wait_until(
        lambda: browser.find_element("id", "picture").get_attribute("naturalWidth") not in (None, "0"),
        what="the lineage picture",
    )
    text = browser.find_element("tag name", "main").text
    assert "ConvolutionLayer" in text and "Checkpoints" in text
    settings = store.query("hyperparameters", run=run, include="all").to_dicts()
    assert {"run", "optimizer/0/group/0"} <= {row["source"] for row in settings}
    assert all(f"{row['name']}" in text for row in settings)  # typed values, optimizer settings too
    screenshot_is_not_blank(browser, shots / "run.png")
    cookie = {"Cookie": f"{dashboard.guard.cookie}={dashboard.token}"}
    status, headers, turtle = get(f"{dashboard.address}/run/{run}/download/turtle", cookie)
    assert status == 200 and "attachment" in headers["content-disposition"]
    assert len(rdflib.Graph().parse(data=turtle.decode(), format="turtle")) > 100
    assert get(f"{dashboard.address}/run/{run}/download/provn", cookie)[2].startswith(b"document")
    document = json.loads(get(f"{dashboard.address}/run/{run}/download/provjson", cookie)[2])
    (bundle,) = document["bundle"].values()  # the run's graph is its bundle
    assert "entity" in bundle and "activity" in bundle


# -- SPARQL -----------------------------------------------------------------------------------------
def test_the_sparql_page_answers_a_bundled_question_and_typed_sparql_and_shows_errors(browser, dashboard, store, shots):
    browser.get(f"{dashboard.address}/sparql?query=best-runs&param.metric=val_loss&param.order=min")
    rows = wait_until(lambda: browser.find_elements("css selector", "table.result tbody tr"), what="the answer")
    assert len(rows) == len(store.query("best-runs", metric="val_loss", order="min"))
    screenshot_is_not_blank(browser, shots / "sparql.png")
    csv_link = browser.find_element("id", "csv").get_attribute("href")
    _, _, body = get(csv_link, {"Cookie": f"{dashboard.guard.cookie}={dashboard.token}"})
    assert body.decode().splitlines()[0].startswith("run_id,run_name,best")

    browser.get(f"{dashboard.address}/sparql")
    browser.find_element("id", "text").send_keys("SELECT ?id WHERE {\n ?run <https://w3id.org/cnnprov/ns#runId> ?id\n")
    browser.find_element("id", "ask").click()
    error = wait_until(lambda: browser.find_element("id", "query-error").text, what="the error")
    assert "3:" in error  # the line where the text ends too early
    browser.get(f"{dashboard.address}/sparql?query=/etc/passwd")
    assert "no bundled question" in browser.find_element("id", "query-error").text


# -- live ---------------------------------------------------------------------------------------------
def test_a_curve_gains_points_while_a_real_training_runs(tmp_path):
    training = PacedTraining(tmp_path / "provenance", tmp_path / "gate", epochs=3)
    try:
        training.wait_for("epoch 1 waiting")  # epoch 0 stored; training held at epoch 1
        (run,) = run_ids(ProvStore(tmp_path / "provenance"))
        served = Dashboard(tmp_path / "provenance")
        session = start_browser()
        try:
            served.start()
            session.get(f"{served.address}/curves?run={run}&metric=val_acc&token={served.token}")
            chart = session.find_element("id", "curves")
            before = int(wait_until(lambda: chart.get_attribute("data-points"), what="the first curve"))
            updates = int(chart.get_attribute("data-updates"))
            assert before == 1
            training.release(1)
            training.wait_for("epoch 2 waiting")  # epoch 1 stored
            wait_until(lambda: int(chart.get_attribute("data-points")) == 2, what="the second point", timeout=30)
            assert int(chart.get_attribute("data-updates")) > updates  # the same page, updated in place
            screenshot_is_not_blank(session, tmp_path / "curves.png")
        finally:
            session.quit()
            served.stop()
    finally:
        training.stop()


# -- Optuna studies and importance --------------------------------------------------------------------
@pytest.fixture(scope="module")
def study_dashboard(tmp_path_factory):
    """Five trials of an Optuna study over lr and filters, each a real (tiny) training."""
    import optuna

    from cnnprov.demo import DigitsCNN
    from cnnprov.integrations.optuna import OptunaStudyRecorder

    from helpers import tiny_data, tiny_trainer

    root = tmp_path_factory.mktemp("study")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="digits", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3)
    )
    recorder = OptunaStudyRecorder(study, store=root / "provenance")

    def objective(trial):
        lr = trial.suggest_float("lr", 0.01, 0.3, log=True)
        model = DigitsCNN(lr=lr, filters=trial.suggest_categorical("filters", [4, 8]))
        trainer = tiny_trainer(root, recorder.logger(trial))
        trainer.fit(model, datamodule=tiny_data())
        return float(trainer.callback_metrics["val_acc"])

    study.optimize(objective, n_trials=5, callbacks=[recorder])
    recorder.finish()
    served = Dashboard(root / "provenance")
    served.start()
    yield study, served
    served.stop()


def test_the_studies_page_shows_the_trials_and_the_samplers_choices(study_dashboard, shots):
    study, served = study_dashboard
    session = start_browser()
    try:
        session.get(f"{served.address}/studies?token={served.token}")
        chart = session.find_element("id", "choices")
        wait_until(lambda: chart.get_attribute("data-drawn"), what="the sampler's choices")
        assert chart.get_attribute("data-traces") == "2"  # one panel per suggested setting: lr, filters
        assert int(chart.get_attribute("data-points")) == 2 * len(study.trials)
        rows = session.find_elements("css selector", "table.result tbody tr")
        assert len(rows) == len(study.trials)
        headers = [th.text for th in session.find_elements("css selector", "table.result th")]
        states = {row.find_elements("tag name", "td")[headers.index("state")].text for row in rows}
        assert states == {trial.state.name for trial in study.trials}
        screenshot_is_not_blank(session, shots / "studies.png")

        session.get(f"{served.address}/explore")
        names = wait_until(
            lambda: [
                row.find_element("tag name", "td").text
                for row in session.find_elements("css selector", "#importance tbody tr")
            ],
            what="the importance panel",
        )
        assert sorted(names) == ["filters", "lr"]
        assert "random-forest" in session.find_element("class name", "methods").text
    finally:
        session.quit()


def test_the_dashboard_reads_a_sparql_server_url(tmp_path):
    from cnnprov import ProvLogger
    from cnnprov.demo import DigitsCNN

    from helpers import OxigraphServer, tiny_data, tiny_trainer

    server = OxigraphServer(tmp_path / "oxigraph").start()
    try:
        logger = ProvLogger(store=server.url, run_name="on-the-server")
        tiny_trainer(tmp_path / "root", logger).fit(DigitsCNN(), datamodule=tiny_data())
        served = Dashboard(server.url)
        served.start()
        try:
            status, _, page = get(served.url)
            assert status == 200 and f'data-run="{logger.run_id}"'.encode() in page and b"on-the-server" in page
            cookie = {"Cookie": f"{served.guard.cookie}={served.token}"}
            _, _, curve = get(f"{served.address}/api/curves?run={logger.run_id}&metric=val_acc", cookie)
            assert [len(trace["x"]) for trace in json.loads(curve)["data"]] == [2]  # two epochs
        finally:
            served.stop()
    finally:
        server.kill()


def test_importance_ranks_the_hyperparameter_that_decides_the_metric_first():
    from cnnprov.ui.importance import importance
    from cnnprov.ui.tables import RunRow, RunsTable

    rows = [
        RunRow(str(i), f"r{i}", "success", None, None, 3, best=0.5 + lr, hyperparameters={"lr": lr, "batch": batch})
        for i, (lr, batch) in enumerate((0.01 * k, (16, 32)[k % 2]) for k in range(1, 21))
    ]
    report = importance(RunsTable("val_acc", "max", rows, ["batch", "lr"], []))
    assert [item.name for item in report.rows] == ["lr", "batch"]
    by_name = {item.name: item for item in report.rows}
    assert by_name["lr"].spearman == pytest.approx(1.0)
    assert abs(by_name["batch"].spearman) < 0.2
    assert by_name["lr"].forest > 0.9
