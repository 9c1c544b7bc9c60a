"""The compressed 2:4 + int4 format: the 2:4 format's metadata, the two kept values of each group
of 4 as signed int4 codes in one byte, and one scale per group of inputs.

A weight ``W [N, K]`` that is 2:4 along K and quantized symmetrically to int4 with one scale
per ``G`` consecutive inputs of a row (``w = scale * q``, ``q`` in -8..7, jaxprune's and
qwix's grid) is stored as

* ``codes [N, K/4]`` uint8: group ``g``'s first kept code in the low nibble, its second in the
  high nibble, each offset by 8 to be unsigned;
* ``meta [N, K/16]`` uint16: the kept positions, exactly as ``format.Sparse24``;
* ``scales [N, K/G]``: the scales, in the activations' dtype.

Per weight: 2 bits of codes (two 4-bit codes per group of 4), 1 of metadata (a 4-bit position
code per group of 4) and ``16 / G`` of 16-bit scales: 3.25 bits at G = 64, 20% of float16.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxprune.kernels.format import check_2_4, compress, group_codes

_OFFSET = 8


class Sparse24Int4(NamedTuple):
    """A 2:4 sparse, int4-quantized weight ``[N, K]`` in compressed form (a pytree)."""

    codes: jax.Array  # [N, K/4] uint8
    meta: jax.Array  # [N, K/16] uint16
    scales: jax.Array  # [N, K/G]

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, K)`` of the dense weight."""
        return self.codes.shape[0], self.meta.shape[1] * 16

    @property
    def group_size(self) -> int:
        """Inputs per scale, ``G``."""
        return self.shape[1] // self.scales.shape[1]

    @property
    def dtype(self):
        """The dtype of the scales, which the product takes for its activations."""
        return self.scales.dtype


def compress_int4(codes: jax.Array, scales: jax.Array) -> Sparse24Int4:
    """Compresses int4 codes ``[N, K]`` (2:4 along K) with their scales ``[N, K/G]``.

    Args:
      codes: signed codes in -8..7 (zero where pruned), any integer dtype; for a
        ``qwix.QArray`` over a Flax kernel, ``qvalue.T``.
      scales: one per ``G`` consecutive inputs of each row (``qwix.QArray.scale.T``).

    Returns:
      The ``Sparse24Int4``; ``decompress_int4`` gives ``scales * codes`` back exactly.

    Raises:
      ValueError: for codes that are not 2:4 or out of range, K not a multiple of 16, or
        scales whose group size does not divide K into groups of 4.
    """
    codes = jnp.asarray(codes)
    check_2_4(codes)
    n, k = codes.shape
    if scales.ndim != 2 or scales.shape[0] != n or k % scales.shape[1] or (
            (k // scales.shape[1]) % 4):
        raise ValueError(f"scales must be [N, K/G] with G a multiple of 4 dividing K={k}; got "
                         f"{scales.shape} for codes {codes.shape}")
    if int(jnp.min(codes)) < -_OFFSET or int(jnp.max(codes)) > _OFFSET - 1:
        raise ValueError(f"int4 codes must lie in -8..7, got [{int(jnp.min(codes))}, "
                         f"{int(jnp.max(codes))}]")
    sparse = compress(codes.astype(jnp.int8))
    pairs = (sparse.values.astype(jnp.int32) + _OFFSET).reshape(n, k // 4, 2)
    packed = (pairs[..., 0] | (pairs[..., 1] << 4)).astype(jnp.uint8)
    return Sparse24Int4(packed, sparse.meta, scales)


def group_values(codes: jax.Array, scales: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """The first and second kept value of every group, ``[..., K/4]`` each, dequantized to
    ``dtype`` from packed codes ``[..., K/4]`` and scales ``[..., K/G]`` (the scale of group
    ``g`` is that of inputs ``4g..4g+3``). Only shifts, masks, broadcasts and reshapes: the
    Pallas kernels dequantize tiles with it."""
    groups = codes.shape[-1]
    repeat = groups // scales.shape[-1]
    per_group = jnp.broadcast_to(scales[..., None], (*scales.shape, repeat)).reshape(
        *scales.shape[:-1], groups).astype(dtype)
    codes = codes.astype(jnp.int32)
    first = ((codes & 15) - _OFFSET).astype(dtype) * per_group
    second = ((codes >> 4) - _OFFSET).astype(dtype) * per_group
    return first, second


def expand_value_pairs(first: jax.Array, second: jax.Array, codes: jax.Array) -> jax.Array:
    """Dense rows ``[..., K]`` from each group's two kept values ``[..., K/4]`` and the group
    codes ``[..., K/4]`` (positions, ``format.group_codes``)."""
    position = jnp.arange(4, dtype=jnp.int32)
    zero = jnp.zeros((), first.dtype)
    dense = (jnp.where((codes & 3)[..., None] == position, first[..., None], zero)
             + jnp.where((codes >> 2)[..., None] == position, second[..., None], zero))
    return dense.reshape(*first.shape[:-1], first.shape[-1] * 4)


@jax.jit
def decompress_int4(sparse: Sparse24Int4) -> jax.Array:
    """The dense weight ``[N, K]`` (``scales * codes``) in the scales' dtype."""
    first, second = group_values(sparse.codes, sparse.scales, sparse.scales.dtype)
    return expand_value_pairs(first, second, group_codes(sparse.meta))


def sparse24_int4_matmul_reference(x: jax.Array, sparse: Sparse24Int4) -> jax.Array:
    """``x [M, K] @ W.T`` with ``W`` dequantized, accumulated in float32; any backend."""
    product = jnp.dot(x, decompress_int4(sparse).astype(x.dtype).T,
                      preferred_element_type=jnp.float32)
    return product.astype(x.dtype)
