"""What each ``cnnprov`` command does, once its arguments are parsed (see :mod:`cnnprov.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from pathlib import Path

from cnnprov.analysis.formatting import render
from cnnprov.errors import CnnprovError, RunFilterWarning, StoreError
from cnnprov.storage.location import StoreLocation


def runs(args: argparse.Namespace) -> int:
    import warnings

    from cnnprov.analysis.provstore import ProvStore

    store = ProvStore(args.store)
    if args.fields:
        fields = store.filter_fields()
        for kind, names in (("run", fields.run), ("hyperparameters", fields.hyperparameters),
                            ("metrics", fields.metrics)):
            print(f"{kind}: {', '.join(names) or '(none)'}")
        return 0
    with warnings.catch_warnings(record=True) as hints:
        warnings.simplefilter("always", RunFilterWarning)
        result = store.runs(where=args.where)
    for hint in hints:
        if issubclass(hint.category, RunFilterWarning):
            print(f"cnnprov: note: {hint.message}", file=sys.stderr)
        else:  # not ours: shown as it would have been
            warnings.showwarning(hint.message, hint.category, hint.filename, hint.lineno)
    sys.stdout.write(render(result, args.format))
    return 0


def query(args: argparse.Namespace) -> int:
    from cnnprov.analysis.provstore import ProvStore, QueryError
    from cnnprov.analysis.query_library import bundled_queries, load_query

    if args.list:
        for name in bundled_queries():
            query = load_query(name)
            print(f"{name}\n  {query.question}")
            for parameter in query.parameters.values():
                default = "required" if parameter.required else f"default: {parameter.default!r}"
                print(f"    --param {parameter.name}=...  {parameter.description} ({default})")
        return 0
    if not args.query:
        raise QueryError("name a query (e.g. best-runs) or a .rq file; `cnnprov query --list` shows them")
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise QueryError(f"--param takes NAME=VALUE, got '{item}'")
        params[name.strip()] = value
    sys.stdout.write(render(ProvStore(args.store).query(args.query, **params), args.format))
    return 0


def export(args: argparse.Namespace) -> int:
    from cnnprov.analysis.picture import PICTURE_FORMATS
    from cnnprov.analysis.provstore import ProvStore, QueryError

    if args.format in PICTURE_FORMATS:
        from cnnprov.analysis.picture import run_picture

        if not args.run:
            raise QueryError(f"--format {args.format} draws one run: pass --run ID (`cnnprov runs` lists the ids)")
        data = run_picture(ProvStore(args.store), args.run, args.format)
    else:
        data = ProvStore(args.store).export(args.format, run=args.run)
    if args.output:
        try:
            args.output.write_bytes(data)
        except OSError as error:
            raise StoreError(f"cannot write '{args.output}': {error.strerror or error}") from None
        print(f"wrote {len(data):,} bytes to {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def reproduce(args: argparse.Namespace) -> int:
    import platform

    from cnnprov.analysis.provstore import ProvStore
    from cnnprov.analysis.reproduce import diff_text, reproduction, reproduction_json, reproduction_text
    from cnnprov.capture.host_facts import installed_packages  # the standard library's metadata: no torch

    store = ProvStore(args.store)
    if args.diff:
        sys.stdout.write(diff_text(store, args.run))
        return 0
    plan = reproduction(store, args.run, installed_packages(), platform.python_version())
    sys.stdout.write(reproduction_json(plan) if args.format == "json" else reproduction_text(plan))
    return 0


def plot(args: argparse.Namespace) -> int:
    from cnnprov.analysis import plots
    from cnnprov.analysis.provstore import ProvStore, QueryError

    store = ProvStore(args.store)
    output = args.output or Path(f"{args.kind}.png")
    try:
        if args.kind == "learning-curves":
            figure = plots.learning_curves(store, metric=args.metric)
        else:
            if not args.name:
                raise QueryError("hyperparameter-effect needs --name, the hyperparameter to plot (e.g. --name dropout)")
            figure = plots.hyperparameter_effect(store, args.name, metric=args.metric, order=args.order)
    except ValueError as error:
        raise QueryError(str(error)) from None
    try:
        plots.save(figure, output)
    except (OSError, ValueError) as error:
        raise QueryError(f"cannot write '{output}': {error}") from None
    print(f"wrote {output}", file=sys.stderr)
    return 0


def demo(args: argparse.Namespace) -> int:
    import logging
    import warnings

    from cnnprov.demo import default_grid, run_sweep

    # The demo prints its own progress; Lightning's per-run banners would drown it.
    # (Lightning sets its loggers' levels when imported, so this comes after the import.)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    from cnnprov.analysis.formatting import to_table
    from cnnprov.analysis.provstore import ProvStore

    store = StoreLocation.parse(args.store)
    grid = default_grid()
    print(f"Training {len(grid)} configurations of a small CNN on scikit-learn's digits, recorded in '{store}' ...")
    run_sweep(store, grid, max_epochs=args.epochs, limit=args.limit)
    reader = ProvStore(store)
    print("\nRuns ranked by their best validation accuracy (cnnprov query best-runs):")
    print(textwrap.indent(to_table(reader.query("best-runs")), "  "))
    print("Time per epoch (cnnprov query epoch-times):")
    print(textwrap.indent(to_table(reader.query("epoch-times")), "  "))
    print("Next: `cnnprov runs`, `cnnprov query --list`, `cnnprov export --format turtle > runs.ttl`")
    return 0


def push(args: argparse.Namespace) -> int:
    from cnnprov.storage.spool import Spool

    target = StoreLocation.parse(args.store)
    for path in args.spool:
        if not path.is_file():
            raise StoreError(f"no spool file '{path}': a run names its spool file when it ends")
    # each entry is a SPARQL Update: sent to the endpoint, or applied to the embedded store
    with target.open_session(serve_reads=False) as session:
        writes = session.target("cnnprov push", spool=False)
        for path in args.spool:
            total = Spool(path).count()
            try:
                sent = Spool(path).drain(writes.update)
            except (CnnprovError, OSError, SyntaxError) as error:
                left = Spool(path).count()
                raise StoreError(
                    f"{error}. Sent {total - left} of {total} batches from '{path}'; the other {left} "
                    f"stay there: run `cnnprov push` again when {target} takes them"
                ) from None
            print(f"sent {sent} batches from '{path}' to {target}", file=sys.stderr)
    return 0

def compact(args: argparse.Namespace) -> int:
    from cnnprov.storage.compaction import compact as compact_store

    location = StoreLocation.parse(args.store)

    def progress(copied: int, total: int) -> None:
        if copied == 0:
            print(f"compacting '{location}' ({total:,} quads) into '{args.output}' ...", file=sys.stderr, flush=True)
        else:
            print(f"copied {copied:,} of {total:,} quads", file=sys.stderr, flush=True)

    done = compact_store(location, args.output, progress=progress)
    print(
        f"'{args.output}': {done.quads:,} quads in {done.graphs:,} graphs, {_mib(done.output_bytes)} "
        f"({done.output_bytes / max(done.source_bytes, 1):.0%} of the store's {_mib(done.source_bytes)}), "
        f"in {done.seconds:.1f} s; '{location}' is unchanged"
    )
    return 0


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def serve(args: argparse.Namespace) -> int:
    import time

    from cnnprov.storage.advertisement import advertise, read_holder, withdraw
    from cnnprov.storage.endpoint import ReadEndpoint
    from cnnprov.storage.local import open_existing_store

    location = StoreLocation.parse(args.store)
    if location.path is None:
        raise StoreError(f"'{location}' is a SPARQL endpoint already: give `serve` a store directory")
    path = location.path
    try:
        store = open_existing_store(location)
    except StoreError:
        holder = read_holder(path)
        if holder is not None and holder.url and holder.alive is not False:
            raise StoreError(
                f"'{path}' is held by a training process ({holder.describe()}), which serves it read-only "
                f"itself at {holder.url} while it trains (to its own readers: `cnnprov` commands "
                f"given --store {path}); run `cnnprov serve` when it ends"
            ) from None
        raise
    endpoint = ReadEndpoint(store, token="", time_limit_s=args.time_limit)  # any SPARQL client here may ask it
    try:
        url = endpoint.start(port=args.port)
    except OSError as error:
        reason = error.strerror or error
        raise StoreError(f"cannot serve on 127.0.0.1:{args.port}: {reason}; choose another --port") from None
    advertise(path, url=f"{url}/sparql")
    print(f"serving '{path}' read-only at {url}/sparql (SPARQL 1.1 Protocol); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.stop()
        withdraw(path)
    print("stopped", file=sys.stderr)
    return 0

def ui(args: argparse.Namespace) -> int:
    try:
        from cnnprov.ui.server import Dashboard
    except ImportError as error:
        raise ImportError(f"the dashboard needs its extra: pip install 'cnnprov[ui]' ({error})") from None

    dashboard = Dashboard(args.store, port=args.port)
    print(f"dashboard of '{dashboard.location}' at {dashboard.url}", flush=True)
    print("read-only; the token in the URL is required; Ctrl-C stops", file=sys.stderr, flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(dashboard.url)
    with contextlib.suppress(KeyboardInterrupt):
        dashboard.serve_forever()
    print("stopped", file=sys.stderr)
    return 0


def validate(args: argparse.Namespace) -> int:
    from cnnprov.analysis.validate import ValidationReport, iter_validate_store

    report = ValidationReport()
    for number, total, run in iter_validate_store(args.store, run=args.run):
        report.runs.append(run)
        if not (args.quiet and run.conforms):
            text = run.text() if run.findings else run.summary()
            print(f"[{number}/{total}] {text}", flush=True)
    print(report.summary())
    if args.run is not None:
        return 0 if report.conforms else 1
    from cnnprov.analysis.constraints import check_constraints, constraint_queries
    from cnnprov.analysis.provstore import ProvStore

    violations = check_constraints(ProvStore(args.store))
    for violation in violations:
        print(f"  {violation}")
    print(
        f"PROV-CONSTRAINTS ({len(constraint_queries())} checks over the whole store): "
        + (f"{len(violations)} violations." if violations else "none violated.")
    )
    return 0 if report.conforms and not violations else 1
