"""Every 2:4 kernel variant lowers for CUDA (Pallas -> Triton IR) on this CPU-only machine.

A lowering regression (an op the Triton backend lost, a bad block shape) fails here, in CI,
instead of on the first GPU; see ``jaxprune.kernels.lowering``. Every variant at every shape
(``lowering.check_all()``) is lowered by the GPU script's smoke run, step 1
(tests/test_kernels.py::test_gpu_check_script_runs_every_step_in_smoke_mode); here, the
structure of the lowered modules and the checker itself.
"""

import jax.numpy as jnp
import pytest

from jaxprune.kernels import lowering


def test_decode_is_one_kernel_and_splitk_two():
    """Decode writes its output directly; split-K needs XLA's reduction of its partials."""
    decode = lowering.lower_for_cuda("decode", 4096, 4096, 1)
    splitk = lowering.lower_for_cuda("splitk", 4096, 4096, 1)
    assert "stablehlo.reduce" not in decode and "stablehlo.pad" not in decode
    assert "stablehlo.reduce" in splitk
    assert "stablehlo.pad" not in splitk  # rows past M are masked, never padded


def test_a_wrong_expectation_is_reported():
    module = lowering.lower_for_cuda("decode", 4096, 4096, 1)
    with pytest.raises(AssertionError, match="Triton calls"):
        lowering.check_lowered(module, "tiled", 4096, 4096, 1, jnp.bfloat16)
