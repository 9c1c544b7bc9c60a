"""Every 2:4 kernel variant lowers for CUDA (Pallas -> Triton IR) on this CPU-only machine.

``jax.export`` with ``platforms=["cuda"]`` runs Pallas's Triton lowering without a GPU, so a
lowering regression (an op the Triton backend lost, a bad block shape) fails here, in CI,
instead of on the first GPU. It does not run Triton's own compiler (PTX), which needs a GPU.
"""

import re

import jax
import jax.numpy as jnp
import pytest
from jax import export

from jaxprune import kernels
from jaxprune.kernels import tuning

TRITON_CALL = "__gpu$xla.gpu.triton"
# The benchmark's default shapes: LLaMA-7B (4096, 11008) and Llama-3-8B (14336) projections.
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (4096, 14336)]
VARIANTS = [("decode", 1), ("decode", 16), ("decode", 32), ("splitk", 16), ("tiled", 128),
            ("tiled", 2048)]


def lower_for_cuda(method: str, n: int, k: int, m: int, dtype) -> str:
    x = jax.ShapeDtypeStruct((m, k), dtype)
    sparse = kernels.Sparse24(jax.ShapeDtypeStruct((n, k // 2), dtype),
                              jax.ShapeDtypeStruct((n, k // 16), jnp.uint16))
    product = jax.jit(lambda a, s: kernels.sparse24_matmul(a, s, method=method))
    exported = export.export(product, platforms=["cuda"],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_CALL)])
    return exported(x, sparse).mlir_module()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("n, k", SHAPES)
def test_every_kernel_lowers_to_triton_for_cuda(n, k, dtype):
    pointer = f"tt.ptr<{'bf16' if dtype == jnp.bfloat16 else 'f16'}>"
    for method, m in VARIANTS:
        module = lower_for_cuda(method, n, k, m, dtype)
        calls = re.findall(r'stablehlo.custom_call @__gpu\$xla\.gpu\.triton.*?name = "(\w+)"',
                           module)
        assert calls == [f"sparse24_matmul_{method}"], (method, m, calls)
        assert pointer in module and "dot" in module, (method, m)
        launch = tuning.settings(method, n, k, m)
        grid_x = int(re.search(r"grid_x = (\d+)", module).group(1))
        if method == "tiled":
            expected = -(-m // min(launch["block_m"], tuning.rows_bucket(m)))
        else:
            expected = -(-n // launch["block_n"])
        assert grid_x == expected, (method, m, grid_x, expected)
        assert f"num_warps = {launch['num_warps']} : i32" in module


def test_decode_is_one_kernel_and_splitk_two():
    """Decode writes its output directly; split-K needs XLA's reduction of its partials."""
    decode = lower_for_cuda("decode", 4096, 4096, 1, jnp.bfloat16)
    splitk = lower_for_cuda("splitk", 4096, 4096, 1, jnp.bfloat16)
    assert "stablehlo.reduce" not in decode and "stablehlo.pad" not in decode
    assert "stablehlo.reduce" in splitk
    assert "stablehlo.pad" not in splitk  # rows past M are masked, never padded
