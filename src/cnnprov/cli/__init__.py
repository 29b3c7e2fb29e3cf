"""The ``cnnprov`` command: list runs, ask questions in SPARQL, export records, run the demo.

Reading commands import neither torch nor Lightning, so they start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cnnprov import __version__
from cnnprov.analysis.formatting import FORMATS
from cnnprov.cli import commands as run_command
from cnnprov.errors import CnnprovError
from cnnprov.storage.location import DEFAULT_STORE, STORE_ENV

_STORE_HELP = (
    f"provenance store directory (default: ${STORE_ENV} if set, else ./{DEFAULT_STORE}, "
    f"the same place ProvLogger writes by default), or the URL of a SPARQL endpoint runs log to "
    f"(e.g. http://127.0.0.1:7878, an Oxigraph server)"
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
  cnnprov runs --where "val_acc > 0.9 and lr < 0.05"    the runs a filter keeps (cnnprov runs --help)
  cnnprov query best-runs                           runs ranked by their best val_acc
  cnnprov query best-runs --param metric=val_loss --param order=min
  cnnprov query --list                              the bundled questions
  cnnprov query my-question.rq --param run=3f2a     your own SPARQL file
  cnnprov export --format turtle --run 3f2a > run.ttl
  cnnprov export -f svg --run 3f2a -o run.svg       a picture of one run's provenance
  cnnprov validate                                  check every run against the SHACL shapes
  cnnprov reproduce 3f2a                            what it takes to rerun a run: command, commit, packages, data
  cnnprov plot learning-curves --metric val_loss -o curves.png
  cnnprov runs --store http://127.0.0.1:7878        runs logged to a SPARQL endpoint (an Oxigraph server)
  cnnprov push --store http://127.0.0.1:7878 cnnprov-spool/*.ru    send what the endpoint missed
  cnnprov serve --store provenance                  serve a store read-only over SPARQL on 127.0.0.1
  cnnprov compact --store provenance archive        a compacted copy of a finished study (~60 % of the disk)
  cnnprov ui --store provenance --open              the dashboard in your browser (pip install 'cnnprov[ui]')
"""

_WHERE_HELP = """\
filters (--where):
  a comparison:   FIELD OP VALUE       OP: = != < <= > >= ~ (regex) contains (substring)
                  FIELD in (V1, V2)    FIELD between LOW and HIGH    (not in, not between, not contains)
  combined with:  and, or, not, ( )    (not binds tightest, then and, then or)
  fields:         id, name, status (running/success/failed/crashed), started, ended (dates, UTC),
                  epochs, duration (seconds, or 90s, 5m, 2h);
                  a hyperparameter by name (lr, optimizer.lr, trainer.max_epochs); hp.NAME or hp(NAME)
                  for a hyperparameter that shares its name with a run field or a metric;
                  best(M), last(M), min(M), max(M) of a metric M; a bare metric name, or metric.M,
                  is its best: lowest for names with loss/error/mse/mae..., else highest
  values:         numbers compare as numbers, true/false as booleans, any other word as text;
                  quote text with spaces or keywords: "my run"; ~ and contains ignore case
  a run that lacks the field fails the comparison (so `not x = 1` keeps it, `x != 1` does not).
  `cnnprov runs --fields` lists the names a store's runs have. docs/filters.md has the reference.

examples:
  cnnprov runs --where "val_acc > 0.95 and lr < 0.05 and status = success"
  cnnprov runs --where "best(val_loss) < 0.3 or last(val_acc) >= 0.9"
  cnnprov runs --where "lr between 0.001 and 0.1 and not (batch_size = 32)"
  cnnprov runs --where "dropout in (0.25, 0.5) and name contains res"
  cnnprov runs --where 'name ~ "^resnet-[0-9]+$" and started >= 2026-01-31 and duration < 10m'
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

    runs = commands.add_parser(
        "runs",
        help="list the recorded runs, or those a filter keeps",
        description="One line per recorded run; --where keeps the runs a filter selects.",
        epilog=_WHERE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_store(runs)
    _add_format(runs)
    runs.add_argument("--where", "-w", metavar="FILTER", help="only the runs this filter keeps (see below)")
    runs.add_argument(
        "--fields", action="store_true", help="list the names a filter can use: run fields, hyperparameters, metrics"
    )
    runs.set_defaults(handler=run_command.runs)

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
    query.set_defaults(handler=run_command.query)

    export = commands.add_parser(
        "export",
        help="write runs as RDF (Turtle, TriG, N-Quads, JSON-LD), PROV-N/JSON/XML, or a picture of one run",
        description=(
            "Serialize one run, or every run, for sharing with other RDF and PROV tools: RDF as stored\n"
            "(turtle, trig, nquads, jsonld), or the W3C PROV serializations through the prov package\n"
            "(provn, provjson, provxml; each run is a bundle). svg, png and dot draw one run's provenance\n"
            "graph, with epochs and metric values folded (svg and png need Graphviz's `dot`)."
        ),
        epilog=(
            "examples:\n"
            "  cnnprov export --format trig -o runs.trig\n"
            "  cnnprov export --format provn --run 3f2a -o run.provn\n"
            "  cnnprov export --format svg --run 3f2a -o run.svg"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_store(export)
    export.add_argument(
        "--format",
        "-f",
        default="turtle",
        choices=("turtle", "trig", "nquads", "jsonld", "provn", "provjson", "provxml", "svg", "png", "dot"),
        help="default: turtle; svg, png and dot need --run",
    )
    export.add_argument("--run", help="only this run (its id, or the start of it)")
    export.add_argument("--output", "-o", type=Path, help="write to this file instead of standard output")
    export.set_defaults(handler=run_command.export)

    validate = commands.add_parser(
        "validate",
        help="check every run's record against the SHACL shapes of a well-formed run",
        description=(
            "Validate each run's named graph with pySHACL against ontologies/cnnprov-shapes.ttl: a start, "
            "agents, settings, epochs in order that start before they end, metric values with a measure "
            "and a numeric value, checkpoints with a SHA-256, and more. Prints one line per run as it is "
            "checked and, for a run that breaks a rule, each node and the rule it breaks. Without --run, the "
            "whole store is then checked against the PROV-CONSTRAINTS that apply to it (ontologies/constraints/: "
            "events in order, one generation per entity, every graph a bundle). Exit status 1 when any run "
            "does not conform or a constraint is violated (warnings do not count)."
        ),
        epilog="example: cnnprov validate --run 3f2a",
    )
    _add_store(validate)
    validate.add_argument("--run", help="only this run (its id, or the start of it)")
    validate.add_argument(
        "--quiet", "-q", action="store_true", help="print only the runs that break a rule, and the summary"
    )
    validate.set_defaults(handler=run_command.validate)

    reproduce = commands.add_parser(
        "reproduce",
        help="what it takes to rerun a run: command line, commit and diff, packages, settings, data",
        description=(
            "Print what a run was started with and what it ran on, as its latest attempt recorded it: the "
            "command line and working directory, the git commit and whether the tree differed from it (the "
            "diff's SHA-256 and how to get the diff), the environment variables that change results, the "
            "machine, the packages that differ between the run and the environment this command runs in "
            "(installed now at another version, or on one side only), the settings (hyperparameters, optimizer "
            "and scheduler) and the data (class, size, batches per role), then shell lines that set it up again. "
            "Run it with the interpreter you would train with: its packages are the ones compared."
        ),
        epilog=(
            "examples:\n"
            "  cnnprov reproduce 3f2a                       the plan, for people\n"
            "  cnnprov reproduce 3f2a --format json         the same, for programs\n"
            "  cnnprov reproduce 3f2a --diff > run.patch    the recorded diff (at most 64 KiB), for git apply\n"
            "  cnnprov query package-differences --param run_a=3f2a --param run_b=9c01    two runs' packages"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reproduce.add_argument("run", help="the run's id, or the start of it (`cnnprov runs` lists them)")
    reproduce.add_argument(
        "--format", "-f", default="text", choices=("text", "json"), help="text for people, json for programs"
    )
    reproduce.add_argument(
        "--diff", action="store_true",
        help="print only the recorded diff from the run's commit to its tree (apply it with git apply)",
    )
    _add_store(reproduce)
    reproduce.set_defaults(handler=run_command.reproduce)

    plot = commands.add_parser(
        "plot",
        help="draw learning curves or a hyperparameter's effect to PNG/SVG",
        description="Draw a picture of the runs in a store with matplotlib; the file's extension picks the format.",
        epilog=(
            "examples:\n"
            "  cnnprov plot learning-curves --metric val_loss -o curves.svg\n"
            "  cnnprov plot hyperparameter-effect --name dropout --metric val_acc -o dropout.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_argument("kind", choices=("learning-curves", "hyperparameter-effect"), help="what to draw")
    plot.add_argument("--metric", "-m", default="val_acc", help="the metric on the y axis (default: val_acc)")
    plot.add_argument("--name", "-n", help="hyperparameter-effect: the hyperparameter on the x axis (e.g. dropout)")
    plot.add_argument(
        "--order", default="max", choices=("max", "min"), help="hyperparameter-effect: best is the max or the min"
    )
    plot.add_argument("--output", "-o", type=Path, help="image file (.png, .svg, .pdf); default: KIND.png")
    _add_store(plot)
    plot.set_defaults(handler=run_command.plot)

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
    demo.set_defaults(handler=run_command.demo)

    compact = commands.add_parser(
        "compact",
        help="write a compacted copy of a store (about 60 %% of the disk), to archive or share it",
        description=(
            "Copy every run of the store directory --store into the new directory OUTPUT, with "
            "the same quads and named graphs in compressed table files: about 60 % of the disk "
            "(a 1,000-run store of 2.1 million quads: 655 -> 385 MiB, in ~35 s on 2 cores). The store "
            "is left as it was; no run may be writing to it meanwhile. Runs recorded into the copy "
            "later are stored uncompressed again as RocksDB merges them in: compact a study once it "
            "is done."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  cnnprov compact --store provenance provenance-compact\n"
            "  mv provenance provenance-old && mv provenance-compact provenance && rm -r provenance-old\n"
            "                                  then use the copy in its place"
        ),
    )
    compact.add_argument("output", type=Path, help="a new directory for the copy")
    _add_store(compact)
    compact.set_defaults(handler=run_command.compact)

    push = commands.add_parser(
        "push",
        help="send the records a run kept while its SPARQL endpoint was away",
        description=(
            "A run that logs to a SPARQL endpoint keeps the batches the endpoint did not take in a "
            "spool file (./cnnprov-spool/RUN-ID.ru, or in $CNNPROV_SPOOL) and says so when it ends. "
            "This sends them, in order, to --store: the endpoint (or a store directory). Sent "
            "batches leave the file, and an empty file is removed, so a push cut short can be run "
            "again."
        ),
        epilog="example: cnnprov push --store http://127.0.0.1:7878 cnnprov-spool/*.ru",
    )
    push.add_argument("spool", nargs="+", type=Path, help="spool files (.ru) to send")
    _add_store(push)
    push.set_defaults(handler=run_command.push)

    serve = commands.add_parser(
        "serve",
        help="serve a store directory read-only over SPARQL on 127.0.0.1",
        description=(
            "Answer SPARQL 1.1 Protocol queries (GET or POST to /sparql) over every run graph of a "
            "store directory, until Ctrl-C. Other cnnprov commands keep working on the store "
            "meanwhile (they ask the endpoint); training into it waits until it stops."
        ),
        epilog="example: cnnprov serve --store provenance --port 7879",
    )
    _add_store(serve)
    serve.add_argument("--port", "-p", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    serve.add_argument(
        "--time-limit", type=float, default=30.0, metavar="SECONDS",
        help="abandon a query that takes longer, answering 503 (default: 30)",
    )
    serve.set_defaults(handler=run_command.serve)

    ui = commands.add_parser(
        "ui",
        help="a dashboard of the store in your browser (read-only, on 127.0.0.1)",
        description=(
            "Serve a web dashboard of a store on 127.0.0.1 until Ctrl-C: the runs table with a filter, "
            "learning curves that grow while a run trains, a compare view, parallel coordinates and "
            "hyperparameter importance across runs, each run's record, Optuna studies and a SPARQL page. "
            "It prints a URL with a token that every request needs; share it only with whom may read "
            "the store. It reads as every command does, so training into the store goes on meanwhile. "
            "Needs the ui extra: pip install 'cnnprov[ui]'."
        ),
        epilog=(
            "examples:\n  cnnprov ui --store provenance --open\n"
            "  cnnprov ui --store http://127.0.0.1:7878 --port 8800"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_store(ui)
    ui.add_argument("--port", "-p", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ui.add_argument("--open", action="store_true", help="open the printed URL in the default web browser")
    ui.set_defaults(handler=run_command.ui)
    return parser


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", "-s", default=None, metavar="PATH|URL", help=_STORE_HELP)


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", "-f", default="table", choices=FORMATS, help="table for people, csv or json for programs"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnprov`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CnnprovError, ImportError) as error:
        print(f"cnnprov: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `cnnprov export | head`
        return 0
    except KeyboardInterrupt:
        print("cnnprov: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
