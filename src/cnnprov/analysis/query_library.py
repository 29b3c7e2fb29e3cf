"""The SPARQL files in ``queries/``: finding them and reading their parameter headers.

Each file opens with a comment block::

    # The question, in one sentence.
    #
    # Parameters:
    #   metric: the metric to rank by (default "val_acc")
    #   run: a run id, or the start of one (required)
    #
    # Example: cnnprov query best-runs --param metric=val_loss

A parameter ``name`` is bound to the query variable ``?name`` as an RDF term.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cnnprov.errors import QueryNotFoundError

_PARAMETER = re.compile(r"^#\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(?P<text>.*?)\s*$")
_DEFAULT = re.compile(r"\(default (?P<value>.+?)\)\s*$")
_REQUIRED = re.compile(r"\(required\)\s*$")


@dataclass(frozen=True)
class Parameter:
    name: str
    description: str
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class QueryFile:
    """A SPARQL query with its one-sentence question and declared parameters."""

    name: str
    path: Path | None
    text: str
    question: str = ""
    parameters: dict[str, Parameter] = field(default_factory=dict)
    example: str = ""


def queries_dir() -> Path:
    return Path(str(resources.files("cnnprov").joinpath("queries")))


def bundled_queries() -> list[str]:
    """Names of the queries shipped with cnnprov, sorted."""
    return sorted(p.stem for p in queries_dir().glob("*.rq"))


def load_query(name_or_path: str | Path) -> QueryFile:
    """A bundled query by name (``best-runs``) or any ``.rq`` file by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".rq" or candidate.is_file():
        if not candidate.is_file():
            raise QueryNotFoundError(f"no query file at '{candidate}'")
        try:
            text = candidate.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise QueryNotFoundError(f"query file '{candidate}' is not UTF-8 text; save it as UTF-8") from None
        return parse_query(candidate.stem, text, candidate)
    bundled = queries_dir() / f"{name_or_path}.rq"
    if not bundled.is_file():
        raise QueryNotFoundError(
            f"no query named '{name_or_path}'; bundled queries: {', '.join(bundled_queries())} "
            f"(or give the path of a .rq file)"
        )
    return parse_query(str(name_or_path), bundled.read_text(encoding="utf-8"), bundled)


def parse_query(name: str, text: str, path: Path | None = None) -> QueryFile:
    """Read the header comment block of a query text."""
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    question_lines: list[str] = []
    parameters: dict[str, Parameter] = {}
    example = ""
    section = "question"
    for line in header:
        body = line.lstrip("#").strip()
        if body.lower().startswith("parameters:"):
            section = "parameters"
            continue
        if body.lower().startswith("example:"):
            example = body.split(":", 1)[1].strip()
            section = "example"
            continue
        if section == "question" and body:
            question_lines.append(body)
        elif section == "parameters":
            match = _PARAMETER.match(line)
            if match:
                parameters[match["name"]] = _parameter(match["name"], match["text"])
    return QueryFile(name, path, text, " ".join(question_lines), parameters, example)


def _parameter(name: str, text: str) -> Parameter:
    default_match = _DEFAULT.search(text)
    if default_match:
        return Parameter(name, text[: default_match.start()].strip(), _parse_default(default_match["value"]))
    required = bool(_REQUIRED.search(text))
    description = _REQUIRED.sub("", text).strip()
    return Parameter(name, description, None, required)


def _parse_default(value: str) -> Any:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            continue
    return value
