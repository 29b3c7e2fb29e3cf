"""A store of an N-run sweep: write throughput, size on disk, memory, and every bundled query's latency.

Each run goes through :class:`cnnprov.RunRecorder`, the recorder and writer that
training uses: start, hyperparameters, the architecture of a real torch model
(built once), optimizer settings read from a real ``torch.optim.SGD``, train and
validation data, then epochs with a train loss at every step and four
epoch-level metrics, and (unless ``--no-checkpoints``) a checkpoint file per
epoch. Runs follow each other in one process, as a sweep's do (each takes the
store the one before kept open). The quads it stored are then read back graph by graph and loaded into a
fresh store with raw ``pyoxigraph.Store.bulk_extend`` (the fastest way in, with
no transactions), timed without the reading, so the recorder's throughput has a
yardstick from the same machine at the same time; transactional
``Store.extend`` of the same quads is timed on a sample of runs too.

Every query in ``queries/`` then runs through ``cnnprov.ProvStore(path).query``
with parameters picked from the store (a real run id, checkpoint, dataset),
both as a separate call (opening the store each time, as the CLI does) and on
a store held open (``with ProvStore(path) as store:``).

Usage::

    python benchmarks/scale.py                     # 1,000 runs (several minutes)
    python benchmarks/scale.py --runs 200 --json scale.json
    python benchmarks/scale.py --smoke             # seconds
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pyoxigraph as ox
import torch

import cnnprov
from cnnprov import ProvStore, RunRecorder
from cnnprov.analysis.provstore import QueryError
from cnnprov.analysis.query_library import bundled_queries, load_query
from cnnprov.demo import DigitsCNN
from cnnprov.storage.compaction import compact
from cnnprov.storage.local import wait_released

from _common import machine, median, peak_rss_mib, table, write_json


def directory_size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / (1024 * 1024)


def record_run(
    store: Any,
    index: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    steps: int,
    checkpoints: Path | None,
    step_values: str = "series",
) -> str:
    lr, dropout = (0.01, 0.05, 0.1, 0.2)[index % 4], (0.0, 0.25, 0.5)[index % 3]
    recorder = RunRecorder(store, name=f"lr={lr},dropout={dropout},seed={index}", step_values=step_values)
    recorder.start(new_run=True)  # as ProvLogger starts a run of its own
    recorder.log_plan("cnnprov.demo.DigitsCNN")
    recorder.log_hyperparameters(
        {
            "lr": lr,
            "dropout": dropout,
            "filters": 16,
            "kernel_size": 3,
            "momentum": 0.9,
            "batch_size": 64,
            "seed": index,
        }
    )
    recorder.log_architecture(model)
    for group in optimizer.param_groups:
        group["lr"] = lr
    recorder.log_optimizer(0, optimizer)
    recorder.log_dataset("train", "torch.utils.data.dataset.TensorDataset", 1437, 64, steps)
    recorder.log_dataset("validation", "torch.utils.data.dataset.TensorDataset", 180, 64, 3)
    step = 0
    for epoch in range(epochs):
        recorder.epoch_started(epoch)
        for _ in range(steps):
            # a training step's value, as ProvLogger logs Lightning's on_step values
            recorder.log_metrics({"train_loss_step": 2.3 / (1 + step * lr), "epoch": epoch}, step=step, per_step=True)
            step += 1
        val_loss = 2.0 / (1 + epoch * lr * 10) + dropout * 0.01
        recorder.log_metrics(
            {
                "val_loss": val_loss,
                "val_acc": 1 - val_loss / 2.5,
                "train_loss_epoch": 2.1 / (1 + epoch * lr * 10),
                "train_acc_epoch": 1 - 2.1 / (1 + epoch * lr * 10) / 2.5,
                "epoch": epoch,
            },
            step=step - 1,
        )
        if checkpoints is not None:
            file = checkpoints / f"run-{index}-epoch={epoch}-step={step}.ckpt"
            file.write_bytes(f"{index}:{epoch}".encode() * 64)
            recorder.log_checkpoint(file, epoch=epoch, step=step, monitor="val_loss", score=val_loss)
            file.unlink()  # the record stays; the disk does not fill up
        recorder.epoch_ended(epoch)
    recorder.finish("success")
    recorder.close()
    return recorder.run_id


def raw_loads(store_path: Path, work: Path, extend_runs: int) -> dict[str, float]:
    """Re-read the recorded quads graph by graph; time bulk_extend of all, extend of a sample."""
    wait_released(store_path)  # the last run's store is let go of in the background
    source = ox.Store(str(store_path))
    graphs = list(source.named_graphs())
    bulk_target = ox.Store(str(work / "raw-bulk"))
    extend_target = ox.Store(str(work / "raw-extend"))
    bulk_s = extend_s = 0.0
    bulk_quads = extend_quads = 0
    pending: list[ox.Quad] = []

    def load_pending() -> None:
        nonlocal bulk_s, bulk_quads
        started = time.perf_counter()
        bulk_target.bulk_extend(pending)
        bulk_s += time.perf_counter() - started
        bulk_quads += len(pending)
        pending.clear()

    for number, graph in enumerate(graphs):
        quads = list(source.quads_for_pattern(None, None, None, graph))
        if number < extend_runs:
            started = time.perf_counter()
            extend_target.extend(quads)
            extend_s += time.perf_counter() - started
            extend_quads += len(quads)
        pending.extend(quads)
        if len(pending) >= 200_000:  # big calls: bulk_extend at its best
            load_pending()
    if pending:
        load_pending()
    default_graph = list(source.quads_for_pattern(None, None, None, ox.DefaultGraph()))
    del source
    return {
        "bulk_extend_s": bulk_s,
        "bulk_extend_quads": bulk_quads,
        "default_graph_quads": len(default_graph),
        "extend_s": extend_s,
        "extend_quads": extend_quads,
    }


def query_parameters(store: ProvStore, name: str, run_ids: list[str], checkpoint: str | None) -> dict[str, Any] | str:
    """Values for a query's required parameters, or why none can be picked."""
    query = load_query(name)
    params: dict[str, Any] = {}
    for parameter in query.parameters.values():
        if not parameter.required:
            continue
        key = parameter.name
        if key in ("run", "run_a"):
            params[key] = run_ids[len(run_ids) // 2]
        elif key == "run_b":
            params[key] = run_ids[len(run_ids) // 2 + 1 if len(run_ids) > 1 else 0]
        elif key == "checkpoint":
            if checkpoint is None:
                return "needs a checkpoint: run without --no-checkpoints"
            params[key] = checkpoint
        elif key == "dataset":
            params[key] = "TensorDataset"
        elif key in ("name", "hyperparameter"):
            params[key] = "dropout"
        elif key == "metric":
            params[key] = "val_acc"
        else:
            return f"no rule picks a value for its required parameter '{key}'"
    return params


def time_queries(path: Path, run_ids: list[str], checkpoint: str | None, repeats: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    names = bundled_queries()
    picked = {name: query_parameters(ProvStore(path), name, run_ids, checkpoint) for name in names}
    for name in names:
        params = picked[name]
        if isinstance(params, str):
            results[name] = {"skipped": params}
            continue
        try:
            per_call, held, rows = [], [], 0
            for _ in range(repeats):
                started = time.perf_counter()
                rows = len(ProvStore(path).query(name, **params))
                per_call.append((time.perf_counter() - started) * 1e3)
            with ProvStore(path) as store:
                store.query(name, **params)  # warm
                for _ in range(repeats):
                    started = time.perf_counter()
                    store.query(name, **params)
                    held.append((time.perf_counter() - started) * 1e3)
        except (QueryError, OSError, RuntimeError, SyntaxError, ValueError) as error:
            results[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        results[name] = {
            "params": params,
            "rows": rows,
            "median_ms": median(per_call),
            "held_open_median_ms": median(held),
        }
    # a per-step learning curve of one run: every value it logged, its series unpacked
    per_call, held = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = len(ProvStore(path).metric_values(run_ids[-1]))
        per_call.append((time.perf_counter() - started) * 1e3)
    with ProvStore(path) as store:
        store.metric_values(run_ids[-1])  # warm
        for _ in range(repeats):
            started = time.perf_counter()
            store.metric_values(run_ids[-1])
            held.append((time.perf_counter() - started) * 1e3)
    results["ProvStore.metric_values"] = {
        "params": {"run": run_ids[-1]},
        "rows": rows,
        "median_ms": median(per_call),
        "held_open_median_ms": median(held),
    }
    return results


#: Plain SPARQL run by pyoxigraph itself on the same store: what a row of answer costs the engine,
#: the floor under any bundled query that lists every run's records.
ENGINE_FLOOR_QUERIES = {
    "one triple pattern (each mls:hasValue)": "SELECT ?s ?value WHERE { GRAPH ?g { ?s mls:hasValue ?value } }",
    "the same, counted (no row materialized)": "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s mls:hasValue ?value } }",
    "the least join that lists hyperparameters (5 patterns)": (
        "SELECT ?run_id ?name ?value WHERE { GRAPH ?g { ?r cnnprov:runId ?run_id ; prov:used ?s . "
        "?s mls:specifiedBy ?p ; mls:hasValue ?value . ?p rdfs:label ?name } }"
    ),
}
_FLOOR_PREFIXES = (
    "PREFIX prov: <http://www.w3.org/ns/prov#> PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#> "
    "PREFIX mls: <http://www.w3.org/ns/mls#> PREFIX cnnprov: <https://w3id.org/cnnprov/ns#> "
)


def engine_floor(path: Path, repeats: int) -> dict[str, dict[str, float]]:
    """µs a row for :data:`ENGINE_FLOOR_QUERIES`, answered as Python rows (best of ``repeats``)."""
    store = ox.Store.read_only(str(path))
    results = {}
    for name, text in ENGINE_FLOOR_QUERIES.items():
        best, rows = float("inf"), 0
        for _ in range(repeats):
            started = time.perf_counter()
            answer = list(store.query(_FLOOR_PREFIXES + text))
            best = min(best, time.perf_counter() - started)
            rows = int(answer[0]["n"].value) if "COUNT" in text else len(answer)
        results[name] = {"rows": rows, "ms": best * 1e3, "us_per_row": best * 1e6 / max(rows, 1)}
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs in the sweep (default 1,000)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per run (default 20)")
    parser.add_argument("--steps", type=int, default=50, help="logged training steps per epoch (default 50)")
    parser.add_argument("--no-checkpoints", action="store_true", help="record no checkpoint files")
    parser.add_argument(
        "--step-values", choices=("series", "entities"), default="series",
        help="how step-level values are stored (RunRecorder's step_values; default series)",
    )
    parser.add_argument(
        "--extend-runs", type=int, default=50, help="runs re-loaded with transactional extend (default 50)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timings per query (default 5)")
    parser.add_argument(
        "--keep", metavar="DIR", help="build the store in DIR and keep it (default: a temporary directory)"
    )
    parser.add_argument("--smoke", action="store_true", help="3 tiny runs: checks the script, measures nothing")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.epochs, args.steps, args.extend_runs, args.repeats = 3, 2, 5, 2, 1
    torch.set_num_threads(1)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_average_at_start']}")
    print(f"{args.runs} runs × {args.epochs} epochs × ({args.steps} steps + 4 epoch metrics)")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cnnprov-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    store_path = work / "provenance"
    checkpoints = None if args.no_checkpoints else work / "checkpoints"
    if checkpoints is not None:
        checkpoints.mkdir(exist_ok=True)
    try:
        model = DigitsCNN()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        run_ids = []
        started = time.perf_counter()
        # a sweep holds one session for all its runs (no read endpoint: it is no part of writing)
        with cnnprov.open_session(store_path, serve_reads=False) as session:
            for index in range(args.runs):
                run_ids.append(
                    record_run(session, index, model, optimizer, args.epochs, args.steps, checkpoints, args.step_values)
                )
                if (index + 1) % max(1, args.runs // 10) == 0:
                    elapsed = time.perf_counter() - started
                    print(f"  {index + 1}/{args.runs} runs recorded, {elapsed:.0f} s", flush=True)
        record_s = time.perf_counter() - started
        record_rss = peak_rss_mib()
        size = directory_size_mib(store_path)  # as the session left it: let go of in the background
        wait_released(store_path)
        released_size = directory_size_mib(store_path)  # let go of: RocksDB's log files removed

        raw = raw_loads(store_path, work, args.extend_runs)
        stored = raw["bulk_extend_quads"] + raw["default_graph_quads"]
        recorder_rate = stored / record_s
        values = args.runs * args.epochs * (args.steps + 4)
        bulk_rate = raw["bulk_extend_quads"] / raw["bulk_extend_s"]
        extend_rate = raw["extend_quads"] / raw["extend_s"] if raw["extend_s"] else float("nan")
        bulk_size = directory_size_mib(work / "raw-bulk")
        compacted = compact(store_path, work / "compacted")  # `cnnprov compact`: a compressed copy
        shutil.rmtree(work / "compacted")

        checkpoint = None
        if checkpoints is not None:
            rows = (
                ProvStore(store_path)
                .sparql(
                    "SELECT ?path WHERE { ?c a <https://w3id.org/cnnprov/ns#Checkpoint> ; "
                    "<https://w3id.org/cnnprov/ns#filePath> ?path } LIMIT 1"
                )
                .to_dicts()
            )
            checkpoint = rows[0]["path"] if rows else None
        queries = time_queries(store_path, run_ids, checkpoint, args.repeats)
        floor = engine_floor(store_path, args.repeats)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    write = {
        "runs": args.runs,
        "quads": stored,
        "record_s": record_s,
        "recorder_quads_per_s": recorder_rate,
        "bulk_extend_quads_per_s": bulk_rate,
        "extend_quads_per_s": extend_rate,
        "recorder_vs_bulk_extend": recorder_rate / bulk_rate,
        "recorder_vs_extend": recorder_rate / extend_rate if extend_rate == extend_rate else None,
        "store_mib": size,
        "store_mib_released": released_size,
        "step_values": args.step_values,
        "values": values,
        "bytes_per_value": size * 1024 * 1024 / values,
        "bulk_store_mib": bulk_size,
        "compacted_store_mib": compacted.output_bytes / 2**20,
        "compact_s": compacted.seconds,
        "peak_rss_mib_after_recording": record_rss,
        "peak_rss_mib_overall": peak_rss_mib(),
    }
    print()
    print(
        table(
            ["what", "value"],
            [
                ["runs / quads stored", f"{args.runs:,} / {stored:,}"],
                ["recording time", f"{record_s:.1f} s ({record_s / args.runs * 1e3:.0f} ms a run)"],
                ["recorder throughput", f"{recorder_rate:,.0f} quads/s"],
                ["raw bulk_extend, same quads", f"{bulk_rate:,.0f} quads/s"],
                ["recorder / bulk_extend", f"{write['recorder_vs_bulk_extend']:.0%}"],
                [f"raw extend (transactions), {args.extend_runs} runs' quads", f"{extend_rate:,.0f} quads/s"],
                ["recorder / extend", f"{write['recorder_vs_extend']:.0%}" if write["recorder_vs_extend"] else "n/a"],
                [
                    "store on disk, as the session left it",
                    f"{size:,.1f} MiB ({size * 1024 * 1024 / max(stored, 1):.0f} B a quad)",
                ],
                ["store on disk, let go of", f"{released_size:,.1f} MiB ({released_size * 1.048576:,.0f} MB)"],
                ["on disk per logged value", f"{size * 1024 * 1024 / values:,.0f} B ({values:,} values)"],
                ["same quads bulk-loaded, on disk", f"{bulk_size:,.1f} MiB"],
                [
                    "compacted copy (`cnnprov compact`), on disk",
                    f"{compacted.output_bytes / 2**20:,.1f} MiB ({compacted.output_bytes / 1e6:,.0f} MB), "
                    f"in {compacted.seconds:.1f} s",
                ],
                ["peak RSS while recording", f"{record_rss:,.0f} MiB"],
            ],
        )
    )
    print()
    print(f"Bundled queries on the {args.runs}-run store (median of {args.repeats}):")
    rows = []
    for name, result in queries.items():
        if "median_ms" in result:
            params = ", ".join(f"{k}={str(v)[-24:]}" for k, v in result["params"].items()) or "-"
            rows.append(
                [name, params, result["rows"], f"{result['median_ms']:.0f}", f"{result['held_open_median_ms']:.0f}"]
            )
        else:
            rows.append([name, result.get("skipped") or result.get("error"), "", "", ""])
    print(table(["query", "parameters", "rows", "ms, opening the store", "ms, store held open"], rows))
    print()
    print(f"What a row costs Oxigraph's engine on the same store (pyoxigraph, best of {args.repeats}):")
    print(
        table(
            ["plain SPARQL", "rows", "ms", "µs a row"],
            [[name, f"{r['rows']:,}", f"{r['ms']:.0f}", f"{r['us_per_row']:.1f}"] for name, r in floor.items()],
        )
    )
    payload = {
        "benchmark": "scale",
        "machine": info,
        "config": {
            "runs": args.runs,
            "epochs": args.epochs,
            "steps": args.steps,
            "checkpoints": not args.no_checkpoints,
            "smoke": args.smoke,
        },
        "write": write,
        "queries": queries,
        "engine_floor": floor,
    }
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
