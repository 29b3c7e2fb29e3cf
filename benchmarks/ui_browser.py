"""How fast the dashboard draws on a large store, measured in a real browser (Debian's chromium).

For the runs table (``/``) and the page across runs (``/explore``: parallel coordinates, scatter,
importance) it loads each page ``--repeats`` times in headless chromium and reports, from the
browser's own clock (Navigation Timing): the server's answer (request start → last byte), and
the time from navigation start until the table is in the page (DOMContentLoaded: the table is
rendered on the server) and until Plotly has drawn each chart (``window.cnnprovDrawn``, set by
the page's script after its first ``Plotly.react``). Also the HTML's size.

The store is one that ``benchmarks/scale.py --keep DIR`` built (``--store DIR/provenance``), or one
this script builds the same way (``--runs``, through the recorder training uses).

Usage::

    python benchmarks/scale.py --keep /tmp/scale && python benchmarks/ui_browser.py --store /tmp/scale/provenance
    python benchmarks/ui_browser.py --runs 1000 --epochs 20
    python benchmarks/ui_browser.py --smoke          # seconds: checks the script, measures nothing
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cnnprov
from cnnprov import ProvStore
from cnnprov.ui.server import Dashboard

from _common import machine, table, write_json

#: what each page waits for before it counts as drawn
PAGES = {
    "runs table": ("/", ["page"]),
    "runs table, filtered": ("/?where=val_acc+%3E+0.5+and+lr+%3C+0.1", ["page"]),
    "across runs": ("/explore", ["parallel", "scatter"]),
}


def build_store(path: Path, runs: int, epochs: int, steps: int) -> None:
    """A sweep of ``runs`` runs recorded as ``benchmarks/scale.py`` records them."""
    import torch
    from scale import record_run

    from cnnprov.demo import DigitsCNN

    torch.set_num_threads(1)
    model = DigitsCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    started = time.perf_counter()
    with cnnprov.open_session(path, serve_reads=False) as session:
        for index in range(runs):
            record_run(session, index, model, optimizer, epochs, steps, None)
            if (index + 1) % max(1, runs // 10) == 0:
                print(f"  {index + 1}/{runs} runs recorded, {time.perf_counter() - started:.0f} s", flush=True)


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        sys.exit("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 "--enable-unsafe-swiftshader"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def measure(session: Any, url: str, charts: list[str], timeout: float = 60.0) -> dict[str, float]:
    """Load ``url`` once; the browser's timings in ms."""
    session.get(url)
    deadline = time.monotonic() + timeout
    script = "return [window.cnnprovDrawn || {}, performance.getEntriesByType('navigation')[0].toJSON()]"
    while True:
        drawn, navigation = session.execute_script(script)
        if all(name in drawn for name in charts):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: {[c for c in charts if c not in drawn]} not drawn within {timeout} s")
        time.sleep(0.05)
    timings = {
        "server_ms": navigation["responseEnd"] - navigation["requestStart"],
        "table_in_page_ms": navigation["domContentLoadedEventEnd"],
        "html_kib": navigation["transferSize"] / 1024,
    }
    for name in charts:
        timings[f"{name}_drawn_ms"] = drawn[name]
    timings["all_drawn_ms"] = max(drawn[name] for name in charts)
    return timings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="an existing store (e.g. built by scale.py --keep DIR: DIR/provenance)")
    parser.add_argument("--runs", type=int, default=1000, help="runs to record when no --store is given (1,000)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per recorded run (default 20)")
    parser.add_argument("--steps", type=int, default=50, help="logged steps per epoch (default 50)")
    parser.add_argument("--repeats", type=int, default=5, help="loads of each page (default 5)")
    parser.add_argument("--smoke", action="store_true", help="3 tiny runs, 1 load: checks the script")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.store, args.runs, args.epochs, args.steps, args.repeats = None, 3, 2, 3, 1
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_average_at_start']}")
    work = None
    if args.store:
        path = Path(args.store)
    else:
        work = Path(tempfile.mkdtemp(prefix="cnnprov-ui-"))
        path = work / "provenance"
        print(f"recording {args.runs} runs × {args.epochs} epochs × {args.steps} steps into {path}")
        build_store(path, args.runs, args.epochs, args.steps)
    runs = len(ProvStore(path).runs())
    dashboard = Dashboard(path)
    session = None
    try:
        dashboard.start()
        session = browser()
        session.get(dashboard.url)
        results: dict[str, dict[str, float]] = {}
        for name, (page, charts) in PAGES.items():
            measure(session, f"{dashboard.address}{page}", charts)  # warm: the browser's cache, the store's
            loads = [measure(session, f"{dashboard.address}{page}", charts) for _ in range(args.repeats)]
            results[name] = {key: statistics.median(load[key] for load in loads) for key in loads[0]}
            results[name]["worst_all_drawn_ms"] = max(load["all_drawn_ms"] for load in loads)
    finally:
        if session is not None:
            session.quit()
        dashboard.stop()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    rows = [
        [name, f"{r['server_ms']:.0f}", f"{r['table_in_page_ms']:.0f}", f"{r['all_drawn_ms']:.0f}",
         f"{r['worst_all_drawn_ms']:.0f}", f"{r['html_kib']:.0f}"]
        for name, r in results.items()
    ]
    print(f"\n{runs} runs, median of {args.repeats} loads in headless chromium (ms from navigation start):")
    print(table(["page", "server", "table in page", "charts drawn", "worst", "HTML KiB"], rows))
    report = {"benchmark": "ui_browser", "machine": info, "runs": runs, "repeats": args.repeats, "pages": results}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
