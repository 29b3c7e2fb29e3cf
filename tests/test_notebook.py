"""The analysis notebook runs top to bottom on a tiny sweep, so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "hyperparameter_analysis.ipynb"


def test_notebook_executes_and_shows_tables_plots_and_a_query_during_training(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROV_NB_EPOCHS", "2")
    monkeypatch.setenv("CNNPROV_NB_LIMIT", "300")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources=resources).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 2  # learning curves and the hyperparameter's effect
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "asked while training: True" in text
    assert "running" in text
    assert (tmp_path / "notebook-provenance").is_dir()
