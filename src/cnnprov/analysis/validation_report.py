"""What a validation found: each broken rule, per run and for a whole store, as text a person reads."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """One rule one node breaks.

    Attributes:
        severity: ``"violation"`` (the record is not well formed), ``"warning"`` or ``"info"``.
        node: the node that breaks the rule (its IRI, or ``_:id`` for a blank node).
        rule: the shape or constraint, as ``cnnprovsh:Name`` (see ``cnnprov-shapes.ttl``).
        message: what a well-formed record holds instead.
        path: the property the rule is about (``prov:startedAtTime``), if any.
        value: the offending value in Turtle syntax, if any.
    """

    severity: str
    node: str
    rule: str
    message: str
    path: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        node = self.node if self.node.startswith("_:") else f"<{self.node}>"
        text = f"{self.severity}: {node} breaks {self.rule}: {self.message}"
        details = " = ".join(part for part in (self.path, self.value) if part)
        return f"{text} ({details})" if details else text


@dataclass
class RunReport:
    """The findings for one graph: a run's, or another bundle cnnprov writes (a study's)."""

    graph: str
    run_id: str | None = None
    name: str | None = None
    kind: str = "run"
    triples: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "violation"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != "violation"]

    @property
    def conforms(self) -> bool:
        """True when no rule is violated (warnings allowed)."""
        return not self.violations

    def label(self) -> str:
        """``run ID 'NAME'``, ``study 'NAME'``, or the graph's IRI when the graph names neither."""
        if self.kind == "study":
            return f"study '{one_line(self.name or '')}' <{self.graph}>"
        if self.run_id is None:
            return f"graph <{self.graph}>"
        return f"run {one_line(self.run_id)}" + (f" '{one_line(self.name)}'" if self.name else "")

    def summary(self) -> str:
        counts = [_count(len(self.violations), "violation"), _count(len(self.warnings), "warning")]
        state = "ok  " if self.conforms else "FAIL"
        detail = ", ".join(c for c in counts if not c.startswith("0 ")) or f"{self.triples:,} triples"
        return f"{state} {self.label()}: {detail}"

    def text(self) -> str:
        """The summary line, then one indented line per finding (violations first)."""
        lines = [self.summary()]
        lines += [f"     {finding}" for finding in self.violations + self.warnings]
        return "\n".join(lines)


@dataclass
class ValidationReport:
    """The reports of every run validated."""

    runs: list[RunReport] = field(default_factory=list)

    @property
    def conforms(self) -> bool:
        return all(run.conforms for run in self.runs)

    def summary(self) -> str:
        failed = [run for run in self.runs if not run.conforms]
        violations = sum(len(run.violations) for run in failed)
        warnings = sum(len(run.warnings) for run in self.runs)
        kinds = [sum(1 for r in self.runs if r.kind == kind) for kind in ("run", "study", "graph")]
        checked = [_count(n, noun) for n, noun in zip(kinds, ("run", "study", "other graph"), strict=True) if n]
        text = f"{' and '.join(checked) or '0 runs'} checked against cnnprov-shapes.ttl: "
        text += f"{len(self.runs) - len(failed)} conform"
        if failed:
            text += f", {len(failed)} do not ({_count(violations, 'violation')})"
        if warnings:
            text += f"; {_count(warnings, 'warning')}"
        return text + "."

    def text(self) -> str:
        return "\n".join([run.text() for run in self.runs] + [self.summary()])


def _count(n: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n:,} {noun if n == 1 else plural}"


def one_line(text: str) -> str:
    """Text for a one-line report: backslashes, quotes and line breaks escaped as in Turtle."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
