"""Draw docs/ontology.svg: the classes of ontologies/cnnprov.ttl and their superclasses in PROV-O and ML Schema.

Run it from anywhere after changing the ontology (drawing needs Graphviz's `dot`):

    python docs/make_ontology_picture.py            # writes docs/ontology.svg
    python docs/make_ontology_picture.py --dot      # prints the DOT text instead
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnprov.analysis.ontology_picture import ontology_dot
from cnnprov.analysis.picture import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dot", action="store_true", help="print the DOT text instead of drawing it")
    parser.add_argument("--output", "-o", type=Path, default=Path(__file__).with_name("ontology.svg"))
    args = parser.parse_args(argv)
    dot = ontology_dot()
    if args.dot:
        sys.stdout.write(dot)
        return 0
    args.output.write_bytes(render(dot, "svg"))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
