"""The Colab notebooks: they run top to bottom in small mode, and carry a full run's outputs."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

COLAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colab")
NOTEBOOKS = ("quickstart", "custom_pruner", "structured")


def read(name: str):
    notebook = nbformat.read(os.path.join(COLAB, f"{name}.ipynb"), as_version=4)
    nbformat.validate(notebook)
    return notebook


def output_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", [])
                   if out.output_type == "stream")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_small_mode(name, monkeypatch):
    notebook = read(name)
    monkeypatch.setenv("JAXPRUNE_NOTEBOOK_SMALL", "1")  # the kernel inherits the environment
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": COLAB}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "mode: small, model tiny-llama" in output_text(code[1])
    assert all(out.output_type != "error" for cell in code for out in cell.outputs)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs_come_from_one_full_run(name):
    code = [cell for cell in read(name).cells if cell.cell_type == "code"]
    # Executed once, top to bottom, in a fresh kernel: counts 1, 2, 3, ... with no gaps.
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert "mode: full, model smollm2-135m" in output_text(code[1])
    for cell in code[2:]:
        assert cell.outputs, cell.source[:80]
        assert all(out.output_type != "error" for out in cell.outputs), cell.source[:80]
