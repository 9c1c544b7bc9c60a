"""Pallas GPU kernels (Triton backend) for ``x @ W.T`` with a 2:4-compressed ``W``.

Both kernels load tiles of the compressed weight (values and metadata), decompress them in
registers with ``format.expand_groups`` (broadcasts, comparisons, a split of a size-2 axis and
reshapes: all lowered by Pallas's Triton backend) and feed a dense Triton ``dot`` that accumulates
in float32. Ragged edges (an N that is not a multiple of the block, the last K block) are
handled by masked loads and stores.

* ``sparse24_matmul_decode``: for few activation rows (M up to 32, the decode regime), one
  kernel: the grid is N blocks, each program reduces the whole K and writes the output.
* ``sparse24_matmul_splitk``: the same regime split over K as well: (N blocks, K splits), each
  program writing a float32 partial ``[splits, M, N]`` summed afterwards by XLA (two kernels;
  kept for comparison in the benchmark).
* ``sparse24_matmul_tiled``: (M blocks, N blocks), the whole K per program.

Each takes a ``Sparse24`` (values in the activations' dtype) or a ``Sparse24Int4`` (int4 codes,
two per byte, and a scale per group of inputs, ``format_int4``): its tiles are dequantized in
registers (``format_int4.group_values``: shifts, masks, a broadcast of the scales) before the
same expansion and dot.

Rows of ``x`` past M are masked in the loads and stores, never padded in memory.

With ``interpret=True`` they run on any backend through Pallas's interpreter (the CPU tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jaxprune.kernels.format import Sparse24, expand_groups, group_codes
from jaxprune.kernels.format_int4 import Sparse24Int4, expand_value_pairs, group_values

# A Triton dot needs every dimension >= 16.
MIN_BLOCK = 16


def _triton():
    # Imported lazily: the Triton-specific module may disappear from future JAX releases.
    from jax.experimental.pallas import triton as plt

    return plt


def _dense_tile(values_ref, meta_ref, n_start, k_start, *, block_n, block_k, n, k):
    """Loads and decompresses the weight tile ``[block_n, block_k]`` at (n_start, k_start)."""
    plt = _triton()
    rows = n_start + jnp.arange(block_n)
    words = k_start // 16 + jnp.arange(block_k // 16)
    pairs = k_start // 2 + jnp.arange(block_k // 2)
    meta = plt.load(meta_ref.at[pl.ds(n_start, block_n), pl.ds(k_start // 16, block_k // 16)],
                    mask=(rows < n)[:, None] & (words < k // 16)[None, :], other=0)
    values = plt.load(values_ref.at[pl.ds(n_start, block_n), pl.ds(k_start // 2, block_k // 2)],
                      mask=(rows < n)[:, None] & (pairs < k // 2)[None, :], other=0)
    return expand_groups(values, group_codes(meta))


def _dense_tile_int4(codes_ref, meta_ref, scales_ref, n_start, k_start, *, block_n, block_k,
                     n, k, group, dtype):
    """Loads the int4 tile ``[block_n, block_k]`` at (n_start, k_start) and dequantizes it to
    ``dtype`` (``block_k`` a multiple of the scale group)."""
    plt = _triton()
    rows = n_start + jnp.arange(block_n)
    words = k_start // 16 + jnp.arange(block_k // 16)
    quads = k_start // 4 + jnp.arange(block_k // 4)
    scale_cols = k_start // group + jnp.arange(block_k // group)
    in_rows = (rows < n)[:, None]
    meta = plt.load(meta_ref.at[pl.ds(n_start, block_n), pl.ds(k_start // 16, block_k // 16)],
                    mask=in_rows & (words < k // 16)[None, :], other=0)
    codes = plt.load(codes_ref.at[pl.ds(n_start, block_n), pl.ds(k_start // 4, block_k // 4)],
                     mask=in_rows & (quads < k // 4)[None, :], other=0)
    scales = plt.load(
        scales_ref.at[pl.ds(n_start, block_n), pl.ds(k_start // group, block_k // group)],
        mask=in_rows & (scale_cols < k // group)[None, :], other=0)
    first, second = group_values(codes, scales, dtype)
    return expand_value_pairs(first, second, group_codes(meta))


def _weight_operands(sparse, dtype, block_k: int) -> tuple[tuple, object]:
    """The arrays a kernel reads for ``sparse`` and the function that makes its dense tiles.

    Raises:
      ValueError: for another type, or an int4 weight whose scale group does not divide
        ``block_k``.
    """
    if isinstance(sparse, Sparse24):
        return (sparse.values, sparse.meta), _dense_tile
    if isinstance(sparse, Sparse24Int4):
        if block_k % sparse.group_size:
            raise ValueError(f"block_k={block_k} must be a multiple of the int4 weight's scale "
                             f"group ({sparse.group_size} inputs)")
        return (sparse.codes, sparse.meta, sparse.scales), functools.partial(
            _dense_tile_int4, group=sparse.group_size, dtype=dtype)
    raise ValueError(f"sparse must be a Sparse24 or Sparse24Int4, got {type(sparse).__name__}")


def _x_tile(x_ref, m_start, k_start, *, block_m, block_k, m, k):
    """Loads ``x[m_start:+block_m, k_start:+block_k]``; rows past M and inputs past K read 0,
    so x is never padded in memory (no copy before the kernel)."""
    plt = _triton()
    rows = m_start + jnp.arange(block_m)
    cols = k_start + jnp.arange(block_k)
    return plt.load(x_ref.at[pl.ds(m_start, block_m), pl.ds(k_start, block_k)],
                    mask=(rows < m)[:, None] & (cols < k)[None, :], other=0)


def _tile_product(x_ref, weight_refs, i, j, first, last, *, tile, m, n, k, block_m,
                  block_n, block_k):
    """The float32 tile ``[block_m, block_n]`` at row block ``i`` and output block ``j``,
    summed over the K blocks ``first .. last - 1`` (``tile`` makes the weight's tiles)."""
    plt = _triton()

    def accumulate(b, acc):
        w = tile(*weight_refs, j * block_n, b * block_k, block_n=block_n, block_k=block_k,
                 n=n, k=k)
        x = _x_tile(x_ref, i * block_m, b * block_k, block_m=block_m, block_k=block_k, m=m,
                    k=k)
        return acc + plt.dot(x, w, trans_b=True)

    return lax.fori_loop(first, last, accumulate, jnp.zeros((block_m, block_n), jnp.float32))


def _store_tile(out_ref, acc, i, j, *, m, n, block_m, block_n, lead=()):
    """Stores the tile at row block ``i``, output block ``j`` (after the leading indices
    ``lead``), masking rows past M and outputs past N."""
    rows = i * block_m + jnp.arange(block_m)
    cols = j * block_n + jnp.arange(block_n)
    where = (*lead, pl.ds(i * block_m, block_m), pl.ds(j * block_n, block_n))
    _triton().store(out_ref.at[where], acc.astype(out_ref.dtype),
                    mask=(rows < m)[:, None] & (cols < n)[None, :])


def _splitk_kernel(x_ref, *refs, blocks_per_split, **sizes):
    """Output block ``program_id(0)``, K share ``program_id(1)``: a float32 partial. ``refs``:
    the weight's arrays, then the output."""
    *weight_refs, out_ref = refs
    j, split = pl.program_id(0), pl.program_id(1)
    first = split * blocks_per_split
    last = jnp.minimum(first + blocks_per_split, pl.cdiv(sizes["k"], sizes["block_k"]))
    acc = _tile_product(x_ref, weight_refs, 0, j, first, last, **sizes)
    _store_tile(out_ref, acc, 0, j, m=sizes["m"], n=sizes["n"], block_m=sizes["block_m"],
                block_n=sizes["block_n"], lead=(split,))


def _decode_kernel(x_ref, *refs, **sizes):
    """One program per block of outputs, the whole K, written straight to ``out``."""
    *weight_refs, out_ref = refs
    j = pl.program_id(0)
    acc = _tile_product(x_ref, weight_refs, 0, j, 0, pl.cdiv(sizes["k"], sizes["block_k"]),
                        **sizes)
    _store_tile(out_ref, acc, 0, j, m=sizes["m"], n=sizes["n"], block_m=sizes["block_m"],
                block_n=sizes["block_n"])


def _tiled_kernel(x_ref, *refs, **sizes):
    """Row block ``program_id(0)``, output block ``program_id(1)``, the whole K."""
    *weight_refs, out_ref = refs
    i, j = pl.program_id(0), pl.program_id(1)
    acc = _tile_product(x_ref, weight_refs, i, j, 0, pl.cdiv(sizes["k"], sizes["block_k"]),
                        **sizes)
    _store_tile(out_ref, acc, i, j, m=sizes["m"], n=sizes["n"], block_m=sizes["block_m"],
                block_n=sizes["block_n"])


def _compiler_params(num_warps: int, num_stages: int):
    plt = _triton()
    return plt.CompilerParams(num_warps=num_warps, num_stages=num_stages)


@functools.partial(jax.jit, static_argnames=("block_n", "block_k", "splits", "num_warps",
                                             "num_stages", "interpret"))
def sparse24_matmul_splitk(x: jax.Array, sparse: Sparse24 | Sparse24Int4, *, block_n: int = 64,
                           block_k: int = 256, splits: int = 4, num_warps: int = 4,
                           num_stages: int = 3, interpret: bool = False) -> jax.Array:
    """``x [M, K] @ W.T`` for small M (at most 32 rows), split over K.

    Args:
      x: activations ``[M, K]``, the weight's dtype.
      sparse: the compressed weight ``W [N, K]``: 2:4 values, or 2:4 int4 codes and scales
        (``block_k`` a multiple of their group size).
      block_n: outputs per program (a power of 2 >= 16).
      block_k: inputs per inner step (a multiple of 64, power of 2).
      splits: programs sharing the K range of one N block.
      num_warps, num_stages: Triton launch settings.
      interpret: run through Pallas's interpreter (any backend).

    Returns:
      ``[M, N]`` in ``x``'s dtype, accumulated in float32.
    """
    m, k = x.shape
    n = sparse.shape[0]
    block_m = max(MIN_BLOCK, pl.next_power_of_2(m))
    if block_m > 32:
        raise ValueError(f"sparse24_matmul_splitk takes at most 32 rows, got M={m}")
    k_blocks = pl.cdiv(k, block_k)
    splits = max(1, min(splits, k_blocks))
    per_split = pl.cdiv(k_blocks, splits)
    arrays, tile = _weight_operands(sparse, x.dtype, block_k)
    kernel = functools.partial(_splitk_kernel, m=m, n=n, k=k, block_m=block_m, block_n=block_n,
                               block_k=block_k, blocks_per_split=per_split, tile=tile)
    partial = pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((splits, m, n), jnp.float32),
        grid=(pl.cdiv(n, block_n), splits), interpret=interpret,
        compiler_params=None if interpret else _compiler_params(num_warps, num_stages),
        name="sparse24_matmul_splitk",
    )(x, *arrays)
    return jnp.sum(partial, axis=0).astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("block_m", "block_n", "block_k", "num_warps",
                                             "num_stages", "interpret"))
def sparse24_matmul_tiled(x: jax.Array, sparse: Sparse24 | Sparse24Int4, *, block_m: int = 64,
                          block_n: int = 64, block_k: int = 128, num_warps: int = 4,
                          num_stages: int = 3, interpret: bool = False) -> jax.Array:
    """``x [M, K] @ W.T`` tiled over M and N, the whole K per program.

    Args:
      x: activations ``[M, K]``, the weight's dtype.
      sparse: the compressed weight ``W [N, K]``: 2:4 values, or 2:4 int4 codes and scales
        (``block_k`` a multiple of their group size).
      block_m, block_n: output tile (powers of 2 >= 16).
      block_k: inputs per inner step (a multiple of 64, power of 2).
      num_warps, num_stages: Triton launch settings.
      interpret: run through Pallas's interpreter (any backend).

    Returns:
      ``[M, N]`` in ``x``'s dtype, accumulated in float32.
    """
    m, k = x.shape
    n = sparse.shape[0]
    block_m = min(block_m, max(MIN_BLOCK, pl.next_power_of_2(m)))
    arrays, tile = _weight_operands(sparse, x.dtype, block_k)
    kernel = functools.partial(_tiled_kernel, m=m, n=n, k=k, block_m=block_m, block_n=block_n,
                               block_k=block_k, tile=tile)
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((m, n), x.dtype),
        grid=(pl.cdiv(m, block_m), pl.cdiv(n, block_n)), interpret=interpret,
        compiler_params=None if interpret else _compiler_params(num_warps, num_stages),
        name="sparse24_matmul_tiled",
    )(x, *arrays)


@functools.partial(jax.jit, static_argnames=("block_n", "block_k", "num_warps", "num_stages",
                                             "interpret"))
def sparse24_matmul_decode(x: jax.Array, sparse: Sparse24 | Sparse24Int4, *, block_n: int = 32,
                           block_k: int = 256, num_warps: int = 4, num_stages: int = 4,
                           interpret: bool = False) -> jax.Array:
    """``x [M, K] @ W.T`` for decoding (M at most 32 rows) in a single kernel.

    One program per block of ``block_n`` outputs reduces the whole K and writes the result in
    ``x``'s dtype: no padded copy of ``x`` (rows past M are masked), no float32 partials, no
    reduction pass. Small ``block_n`` gives enough programs to fill the GPU (N = 4096 makes
    128 with the default).

    Args:
      x: activations ``[M, K]``, the weight's dtype.
      sparse: the compressed weight ``W [N, K]``: 2:4 values, or 2:4 int4 codes and scales
        (``block_k`` a multiple of their group size).
      block_n: outputs per program (a power of 2 >= 16).
      block_k: inputs per inner step (a multiple of 64, power of 2).
      num_warps, num_stages: Triton launch settings.
      interpret: run through Pallas's interpreter (any backend).

    Returns:
      ``[M, N]`` in ``x``'s dtype, accumulated in float32.

    Raises:
      ValueError: for more than 32 rows.
    """
    m, k = x.shape
    n = sparse.shape[0]
    block_m = max(MIN_BLOCK, pl.next_power_of_2(m))
    if block_m > 32:
        raise ValueError(f"sparse24_matmul_decode takes at most 32 rows, got M={m}")
    arrays, tile = _weight_operands(sparse, x.dtype, block_k)
    kernel = functools.partial(_decode_kernel, m=m, n=n, k=k, block_m=block_m,
                               block_n=block_n, block_k=block_k, tile=tile)
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((m, n), x.dtype),
        grid=(pl.cdiv(n, block_n),), interpret=interpret,
        compiler_params=None if interpret else _compiler_params(num_warps, num_stages),
        name="sparse24_matmul_decode",
    )(x, *arrays)
