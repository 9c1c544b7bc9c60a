"""The Colab notebooks: they run top to bottom in small mode, and carry a full run's outputs."""

import pytest

from experiments import notebooks


@pytest.mark.parametrize("name", notebooks.NOTEBOOKS)
def test_notebook_runs_in_small_mode(name, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    executed = notebooks.execute(name, small=True, timeout=900)  # raises on any cell error
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert "mode: small, model tiny-llama" in notebooks.stream_text(code[1])
    assert all(out.output_type != "error" for cell in code for out in cell.outputs)
    if name == "custom_pruner":  # criteria written in a cell equal the built-in methods
        printed = "".join(notebooks.stream_text(cell) for cell in code)
        assert "my Wanda == built-in Wanda: True; my RIA == built-in RIA: True" in printed


@pytest.mark.parametrize("name", notebooks.NOTEBOOKS)
def test_committed_outputs_come_from_one_full_run(name):
    code = [cell for cell in notebooks.read(name).cells if cell.cell_type == "code"]
    # Executed once, top to bottom, in a fresh kernel: counts 1, 2, 3, ... with no gaps.
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert "mode: full, model smollm2-135m" in notebooks.stream_text(code[1])
    for cell in code:
        assert all(out.output_type != "error" for out in cell.outputs), cell.source[:80]
    assert code[-1].outputs  # the run reached the end and showed its result
