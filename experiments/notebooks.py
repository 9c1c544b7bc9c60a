"""Running the Colab notebooks of colab/ (flag-free; shared by the binary and the tests)."""

from __future__ import annotations

import os

import nbformat
from nbclient import NotebookClient

COLAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colab")
NOTEBOOKS = ("quickstart", "custom_pruner", "structured")
# The notebooks read this to pick their small mode (tiny random model, a few windows).
SMALL_ENV = "JAXPRUNE_NOTEBOOK_SMALL"


def read(name: str):
    """``colab/NAME.ipynb``, validated against the notebook schema."""
    notebook = nbformat.read(os.path.join(COLAB, f"{name}.ipynb"), as_version=4)
    nbformat.validate(notebook)
    return notebook


def execute(name: str, *, small: bool, timeout: int = 3600):
    """The notebook executed top to bottom in a fresh ``python3`` kernel, cwd ``colab/``.

    Args:
      name: one of ``NOTEBOOKS``.
      small: run in small mode.
      timeout: seconds allowed per cell.

    Returns:
      The executed notebook (the file on disk is not changed).

    Raises:
      nbclient.exceptions.CellExecutionError: naming the cell that failed.
    """
    notebook = read(name)
    previous = os.environ.get(SMALL_ENV)
    os.environ[SMALL_ENV] = "1" if small else "0"  # the kernel inherits the environment
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": COLAB}}).execute()
    finally:
        if previous is None:
            del os.environ[SMALL_ENV]
        else:
            os.environ[SMALL_ENV] = previous
    return notebook


def stream_text(cell) -> str:
    """Everything a code cell printed."""
    return "".join(out.get("text", "") for out in cell.get("outputs", [])
                   if out.output_type == "stream")
