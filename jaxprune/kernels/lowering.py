"""Lowering the 2:4 kernels for CUDA without a GPU: the Triton IR that a GPU would compile.

``jax.export`` with ``platforms=["cuda"]`` runs Pallas's Triton lowering on any machine, so a
regression in it (an op the backend lost, a block shape it refuses) shows on a CPU. It stops
before Triton's own compiler (PTX), which needs a GPU.

  python -m jaxprune.kernels.lowering        # every variant, the benchmark's shapes
"""

from __future__ import annotations

import re
import sys

import jax
import jax.numpy as jnp
from jax import export

from jaxprune.kernels import tuning
from jaxprune.kernels.format import Sparse24
from jaxprune.kernels.matmul import sparse24_matmul

TRITON_CALL = "__gpu$xla.gpu.triton"
# The benchmark's default shapes: LLaMA-7B (4096, 11008) and Llama-3-8B (14336) projections.
SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (4096, 14336))
# (method, M): decode at 1, 16 and 32 rows, split-K, the 128-row tile and the general tile.
VARIANTS = (("decode", 1), ("decode", 16), ("decode", 32), ("splitk", 16), ("tiled", 128),
            ("tiled", 1024))
DTYPES = (jnp.bfloat16, jnp.float16)


def lower_for_cuda(method: str, n: int, k: int, m: int, dtype=jnp.bfloat16) -> str:
    """The StableHLO module, Triton kernels included, of ``sparse24_matmul(method=...)`` for
    ``x [M, K]`` and a compressed ``W [N, K]``, lowered for CUDA."""
    x = jax.ShapeDtypeStruct((m, k), dtype)
    sparse = Sparse24(jax.ShapeDtypeStruct((n, k // 2), dtype),
                      jax.ShapeDtypeStruct((n, k // 16), jnp.uint16))
    product = jax.jit(lambda a, s: sparse24_matmul(a, s, method=method))
    exported = export.export(product, platforms=["cuda"],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_CALL)])
    return exported(x, sparse).mlir_module()


def check_lowered(module: str, method: str, n: int, k: int, m: int, dtype) -> None:
    """Checks one lowered module: a single Triton call of the method's kernel, over pointers of
    ``dtype``, with the grid and warps of the launch settings.

    Raises:
      AssertionError: naming what differs.
    """
    where = f"{method} N={n} K={k} M={m} {jnp.dtype(dtype).name}"
    calls = re.findall(r'stablehlo.custom_call @__gpu\$xla\.gpu\.triton.*?name = "(\w+)"', module)
    assert calls == [f"sparse24_matmul_{method}"], f"{where}: Triton calls {calls}"
    pointer = "tt.ptr<bf16>" if dtype == jnp.bfloat16 else "tt.ptr<f16>"
    assert pointer in module, f"{where}: no {pointer} in the Triton IR"
    launch = tuning.settings(method, n, k, m)
    if method == "tiled":
        expected = -(-m // min(launch["block_m"], tuning.rows_bucket(m)))
    else:
        expected = -(-n // launch["block_n"])
    grid_x = int(re.search(r"grid_x = (\d+)", module).group(1))
    assert grid_x == expected, f"{where}: grid_x {grid_x}, expected {expected}"
    assert f"num_warps = {launch['num_warps']} : i32" in module, f"{where}: num_warps"


def check_all(shapes=SHAPES, variants=VARIANTS, dtypes=DTYPES) -> int:
    """Lowers and checks every (shape, variant, dtype); returns how many."""
    count = 0
    for (n, k), (method, m), dtype in ((s, v, d) for s in shapes for v in variants
                                       for d in dtypes):
        check_lowered(lower_for_cuda(method, n, k, m, dtype), method, n, k, m, dtype)
        count += 1
    return count


if __name__ == "__main__":
    print(f"lowered and checked {check_all()} kernel variants for CUDA")
    sys.exit(0)
