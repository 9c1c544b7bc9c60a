"""``sparse24_matmul``: the reference product and the dispatcher between the kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.kernels import pallas_sparse24, tuning
from jaxprune.kernels.format import Sparse24, decompress
from jaxprune.kernels.format_int4 import (
    Sparse24Int4,
    decompress_int4,
    sparse24_int4_matmul_reference,
)

METHODS = ("auto", "reference", "decode", "splitk", "tiled", "dense")
# M up to DECODE_MAX_ROWS uses the one-kernel decode, up to TILED_MAX_ROWS the tiled kernel,
# above it decompression then a dense dot (compute-bound there; the extra weight pass is
# cheap, and a model can keep its decompressed weights for a whole pass instead, see
# sparse_linear.densify_llama).
DECODE_MAX_ROWS = 32
TILED_MAX_ROWS = 1024
KERNELS = {"decode": pallas_sparse24.sparse24_matmul_decode,
           "splitk": pallas_sparse24.sparse24_matmul_splitk,
           "tiled": pallas_sparse24.sparse24_matmul_tiled}


def sparse24_matmul_reference(x: jax.Array, sparse: Sparse24) -> jax.Array:
    """``x [M, K] @ W.T`` with ``W`` decompressed, accumulated in float32; any backend."""
    product = jnp.dot(x, decompress(sparse).T, preferred_element_type=jnp.float32)
    return product.astype(x.dtype)


def _check_layout(sparse: Sparse24 | Sparse24Int4) -> None:
    """The arrays' shapes and dtypes against the weight's ``(N, K)``."""
    n, k = sparse.shape
    if isinstance(sparse, Sparse24Int4):
        ok = sparse.codes.dtype == jnp.uint8 and sparse.codes.shape == (n, k // 4)
        stored = f"codes {sparse.codes.shape} {sparse.codes.dtype}"
        wanted = "uint8 codes [N, K/4]"
    else:
        ok = sparse.values.shape == (n, k // 2)
        stored = f"values {sparse.values.shape} {sparse.values.dtype}"
        wanted = "values [N, K/2]"
    if not ok or sparse.meta.dtype != jnp.uint16:
        raise ValueError(f"malformed {type(sparse).__name__}: {stored}, meta {sparse.meta.shape} "
                         f"{sparse.meta.dtype}; expected {wanted} and uint16 meta [N, K/16]")


def check_matmul_inputs(x: jax.Array, sparse: Sparse24 | Sparse24Int4) -> None:
    """Raises ValueError for shapes or dtypes that do not fit ``x @ W.T``."""
    if not isinstance(sparse, Sparse24 | Sparse24Int4):
        raise ValueError(f"sparse must be a Sparse24 or Sparse24Int4 (see "
                         f"jaxprune.kernels.compress, compress_int4), got "
                         f"{type(sparse).__name__}")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [M, K], got shape {x.shape}")
    _check_layout(sparse)
    k = sparse.shape[1]
    if x.shape[1] != k:
        raise ValueError(f"x has K={x.shape[1]} inputs but the weight has K={k}")
    if x.dtype != sparse.dtype:
        what = "weight's scales" if isinstance(sparse, Sparse24Int4) else "weight values"
        raise ValueError(f"x is {x.dtype} but the {what} are {sparse.dtype}; cast one of them")


def sparse24_matmul(x: jax.Array, sparse: Sparse24 | Sparse24Int4, *, method: str = "auto",
                    interpret: bool = False) -> jax.Array:
    """``x [M, K] @ W.T`` for a 2:4-compressed ``W [N, K]`` (``Sparse24``, or ``Sparse24Int4``:
    int4 codes and group scales).

    ``method="auto"`` picks on a GPU by M: the one-kernel decode up to 32 rows, the tiled
    kernel up to 1024, decompression then a dense dot above; off a GPU (unless ``interpret``)
    it uses the reference. The kernels' launch settings come from ``tuning.settings``.

    Args:
      x: activations ``[M, K]`` in the weight's dtype.
      sparse: the compressed weight.
      method: one of ``METHODS``.
      interpret: run the Pallas kernels through the interpreter (CPU tests).

    Returns:
      ``[M, N]`` in ``x``'s dtype.

    Raises:
      ValueError: for mismatched shapes or dtypes, or an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_matmul_inputs(x, sparse)
    if method == "auto":
        on_gpu = jax.default_backend() == "gpu"
        if not (on_gpu or interpret):
            method = "reference"
        elif x.shape[0] <= DECODE_MAX_ROWS:
            method = "decode"
        elif x.shape[0] <= TILED_MAX_ROWS:
            method = "tiled"
        else:
            method = "dense"
    int4 = isinstance(sparse, Sparse24Int4)
    if method == "reference":
        return (sparse24_int4_matmul_reference if int4 else sparse24_matmul_reference)(x, sparse)
    if method == "dense":
        weight = decompress_int4(sparse) if int4 else decompress(sparse)
        return jnp.dot(x, weight.T, preferred_element_type=jnp.float32).astype(x.dtype)
    n, k = sparse.shape
    launch = dict(tuning.settings(method, n, k, x.shape[0]))
    if int4 and launch["block_k"] % sparse.group_size:
        # A tile dequantizes whole scale groups: the settings tuned for bf16 weights may take
        # fewer inputs per step than one group holds.
        launch["block_k"] = sparse.group_size * -(-launch["block_k"] // sparse.group_size)
    return KERNELS[method](x, sparse, interpret=interpret, **launch)
