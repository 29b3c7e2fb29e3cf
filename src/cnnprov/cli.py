"""The ``cnnprov`` command: list runs, ask questions in SPARQL, export records, run the demo.

Reading commands import neither torch nor Lightning, so they start fast.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .formatting import FORMATS, render
from .store import DEFAULT_STORE, STORE_ENV, StoreError

_STORE_HELP = (
    f"provenance store directory (default: ${STORE_ENV} if set, else ./{DEFAULT_STORE}, "
    f"the same place ProvLogger writes by default)"
)

_DESCRIPTION = """\
Record PyTorch Lightning training as W3C PROV-O and ask which hyperparameters did what.

Training with `Trainer(logger=ProvLogger())` records each run into a store
(./provenance by default). These commands read it.
"""

_EPILOG = """\
examples:
  cnnprov demo                                      train 4 configurations of a small CNN and rank them
  cnnprov runs                                      one line per run: id, name, status, start, end, epochs
  cnnprov query best-runs                           runs ranked by their best val_acc
  cnnprov query best-runs --param metric=val_loss --param order=min
  cnnprov query --list                              the bundled questions
  cnnprov query my-question.rq --param run=3f2a     your own SPARQL file
  cnnprov export --format turtle --run 3f2a > run.ttl
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnprov",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnprov {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    runs = commands.add_parser("runs", help="list the recorded runs", description="One line per recorded run.")
    _add_store(runs)
    _add_format(runs)
    runs.set_defaults(handler=_runs)

    query = commands.add_parser(
        "query",
        help="run a bundled query or a .rq file",
        description=(
            "Run a SPARQL SELECT query over every run in the store: a bundled query by name "
            "(see --list) or the path of a .rq file. Parameters are bound as RDF terms, never "
            "pasted into the query text."
        ),
        epilog="example: cnnprov query best-runs --param metric=val_loss --param order=min",
    )
    query.add_argument("query", nargs="?", help="a bundled query name (e.g. best-runs) or a .rq file")
    query.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind the query parameter NAME (repeatable); --list shows each query's parameters",
    )
    query.add_argument("--list", action="store_true", help="list the bundled queries and their parameters")
    _add_store(query)
    _add_format(query)
    query.set_defaults(handler=_query)

    export = commands.add_parser(
        "export",
        help="write runs as Turtle, TriG, N-Quads or JSON-LD",
        description="Serialize one run, or every run, for sharing with other RDF and PROV tools.",
        epilog="example: cnnprov export --format trig -o runs.trig",
    )
    _add_store(export)
    export.add_argument(
        "--format", "-f", default="turtle", choices=("turtle", "trig", "nquads", "jsonld"), help="default: turtle"
    )
    export.add_argument("--run", help="only this run (its id, or the start of it)")
    export.add_argument("--output", "-o", type=Path, help="write to this file instead of standard output")
    export.set_defaults(handler=_export)

    demo = commands.add_parser(
        "demo",
        help="train a small CNN on a hyperparameter grid and print the analysis",
        description=(
            "Train a two-layer CNN on scikit-learn's 8x8 handwritten digits (shipped with "
            "scikit-learn; nothing is downloaded) for each configuration of learning rate x "
            "dropout, record every run with ProvLogger, then print the runs ranked by their best "
            "validation accuracy and the time per epoch."
        ),
    )
    _add_store(demo)
    demo.add_argument("--epochs", type=int, default=5, help="epochs per configuration (default: 5)")
    demo.add_argument("--limit", type=int, default=None, help="use only the first N images (faster, less accurate)")
    demo.set_defaults(handler=_demo)
    return parser


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", "-s", default=None, metavar="PATH", help=_STORE_HELP)


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", "-f", default="table", choices=FORMATS, help="table for people, csv or json for programs"
    )


def _runs(args: argparse.Namespace) -> int:
    from .query import ProvStore

    sys.stdout.write(render(ProvStore(args.store).runs(), args.format))
    return 0


def _query(args: argparse.Namespace) -> int:
    from .queries_library import bundled_queries, load_query
    from .query import ProvStore, QueryError

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


def _export(args: argparse.Namespace) -> int:
    from .query import ProvStore

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


def _demo(args: argparse.Namespace) -> int:
    import logging
    import warnings

    from .demo import default_grid, run_sweep
    from .store import resolve_store_path

    # The demo prints its own progress; Lightning's per-run banners would drown it.
    # (Lightning sets its loggers' levels when imported, so this comes after the import.)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    from .formatting import to_table
    from .query import ProvStore

    store = resolve_store_path(args.store)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnprov`` console script."""
    from .query import QueryError, RunNotFoundError
    from .queries_library import QueryNotFoundError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (StoreError, QueryError, RunNotFoundError, QueryNotFoundError, ImportError) as error:
        print(f"cnnprov: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `cnnprov export | head`
        return 0
    except KeyboardInterrupt:
        print("cnnprov: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
