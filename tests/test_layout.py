"""The package's folders show its architecture, and imports flow one way through them.

``rdf`` (vocabulary, literals, SPARQL text) imports nothing of cnnprov; ``storage`` only
``rdf``; ``capture`` reads and writes through ``storage``; ``analysis`` reads through
``storage`` and never imports ``capture`` or ``integrations`` (so reading commands never
import torch or Lightning); ``ui`` (the dashboard) reads through ``analysis`` alone;
``integrations`` drive ``capture``; the CLI and the demo sit on top.
``errors`` is a leaf every layer may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "cnnprov"

#: What each layer may import of cnnprov, besides itself.
ALLOWED = {
    "errors": set(),
    "rdf": {"errors"},
    "storage": {"errors", "rdf"},
    "capture": {"errors", "rdf", "storage"},
    "analysis": {"errors", "rdf", "storage"},
    "integrations": {"errors", "rdf", "storage", "capture", "analysis"},
    "ui": {"errors", "rdf", "storage", "analysis"},
    "demo": {"errors", "rdf", "storage", "capture", "analysis", "integrations"},
    "cli": {"errors", "rdf", "storage", "capture", "analysis", "integrations", "demo", "ui", "__init__"},
    "__init__": {"errors", "rdf", "storage", "capture", "analysis", "integrations"},
}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Dotted module name (``cnnprov.storage.local``) → file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, module: str, top_level_only: bool = False) -> set[str]:
    """The cnnprov modules ``path`` imports (with ``top_level_only``: those imported as it loads)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = _top_level(tree.body) if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if base == "cnnprov" or base.startswith("cnnprov."):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in modules() else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cnnprov")}
    return found - {module}


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements run when the module loads: not function bodies, not ``if TYPE_CHECKING:`` blocks."""
    run = []
    for statement in body:
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            continue
        if isinstance(statement, (ast.If, ast.Try)):
            run += _top_level(statement.body) + _top_level(getattr(statement, "orelse", []))
            for handler in getattr(statement, "handlers", []):
                run += _top_level(handler.body)
        elif not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            run.append(statement)
    return run


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_flow_one_way_through_the_layers(module):
    own = layer(module)
    wrong = sorted(
        target for target in imports(modules()[module], module) if layer(target) not in ALLOWED[own] | {own}
    )
    assert not wrong, f"{module} ({own}) may not import {wrong}"


def test_no_module_imports_itself_back_through_others_as_it_loads():
    graph = {name: imports(path, name, top_level_only=True) for name, path in modules().items()}
    graph = {name: {t for t in targets if t in graph and layer(t) != "__init__"} for name, targets in graph.items()}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in trail:
                cycles.append([*trail[trail.index(target):], target])
            elif len(trail) < 12:
                visit(target, [*trail, target])

    for name in graph:
        visit(name, [name])
    assert not cycles, f"import circles: {cycles[:3]}"


def test_the_layers_are_folders_and_no_module_is_over_the_size_of_one_job():
    assert {layer(m) for m in modules()} == set(ALLOWED)
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_reading_commands_never_import_torch_or_lightning():
    import subprocess
    import sys

    script = (
        "import sys, cnnprov.cli, cnnprov.analysis.provstore, cnnprov.analysis.validate, cnnprov.analysis.prov_export, "
        "cnnprov.analysis.plots, cnnprov.analysis.picture, cnnprov.storage.local, cnnprov.storage.remote; "
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
