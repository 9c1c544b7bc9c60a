"""The compressed 2:4 format: kept values and 2-bit positions packed in uint16 metadata.

A weight ``W`` of shape ``[N, K]`` (N outputs, K inputs; the transpose of a Flax kernel) whose
every group of 4 consecutive inputs holds at most 2 non-zeros is stored as

* ``values [N, K/2]``: the two kept entries of each group, in input order;
* ``meta [N, K/16]`` uint16: per group a 4-bit code ``i0 | i1 << 2`` with the positions
  ``i0 < i1`` (0..3) of the two kept entries; group ``4c + g`` of a row sits in bits
  ``4g .. 4g+3`` of word ``c``.

A group with fewer than two non-zeros keeps zeros at its lowest free positions, so every group
has exactly two entries. In bfloat16 the format takes 9/16 of the dense bytes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _checks


class Sparse24(NamedTuple):
    """A 2:4 sparse weight ``[N, K]`` in compressed form (a pytree of two arrays)."""

    values: jax.Array  # [N, K/2], the weight's dtype
    meta: jax.Array  # [N, K/16] uint16

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, K)`` of the dense weight."""
        return self.values.shape[0], self.meta.shape[1] * 16

    @property
    def dtype(self):
        return self.values.dtype


def check_2_4(weight: jax.Array) -> None:
    """Checks that ``weight [N, K]`` can be compressed: K a multiple of 16, 2:4 along K.

    Raises:
      ValueError: for another rank, a K that is not a multiple of 16, or (for concrete values)
        a group of 4 inputs with more than two non-zeros, naming how many and the first.
    """
    if weight.ndim != 2:
        raise ValueError(f"a 2:4 weight must be 2-D [N, K], got shape {weight.shape}")
    n, k = weight.shape
    if k % 16:
        raise ValueError(f"K (the input size, axis 1) must be a multiple of 16 for the 2:4 "
                         f"format, got K={k} (shape {weight.shape})")
    if _checks.is_concrete(weight):
        nonzero = np.asarray(_nonzeros_per_group(weight))
        bad = np.argwhere(nonzero > 2)
        if bad.size:
            row, group = bad[0]
            raise ValueError(
                f"weight is not 2:4 sparse along K: {len(bad)} groups of 4 inputs have more "
                f"than 2 non-zeros; the first is row {row}, inputs {4 * group}..{4 * group + 3} "
                f"({int(nonzero[row, group])} non-zeros)")


def _nonzeros_per_group(weight: jax.Array) -> jax.Array:
    """Non-zeros in each group of 4 consecutive inputs, ``[N, K/4]``."""
    n, k = weight.shape
    return jnp.sum(weight.reshape(n, k // 4, 4) != 0, axis=-1)


@jax.jit
def _compress(weight: jax.Array) -> Sparse24:
    n, k = weight.shape
    groups = weight.reshape(n, k // 4, 4)
    nonzero = groups != 0
    # Rank the positions: non-zeros first, then by position; the first two are kept.
    order = jnp.argsort(jnp.where(nonzero, 0, 4) + jnp.arange(4), axis=-1, stable=True)
    kept = jnp.sort(order[..., :2], axis=-1)
    values = jnp.take_along_axis(groups, kept, axis=-1).reshape(n, k // 2)
    codes = (kept[..., 0] | (kept[..., 1] << 2)).astype(jnp.uint32).reshape(n, k // 16, 4)
    meta = codes[..., 0] | codes[..., 1] << 4 | codes[..., 2] << 8 | codes[..., 3] << 12
    return Sparse24(values, meta.astype(jnp.uint16))


def _raise_if_groups_exceed(bad_groups: np.ndarray) -> None:
    if int(bad_groups):
        raise ValueError(f"weight is not 2:4 sparse along K: {int(bad_groups)} groups of 4 "
                         "inputs have more than 2 non-zeros (traced weight)")


def compress(weight: jax.Array) -> Sparse24:
    """Compresses a 2:4-sparse weight ``[N, K]`` (see the module docstring).

    A weight that is not 2:4 is always refused, never truncated: a concrete weight is checked
    on the host first (``check_2_4``); under ``jit`` the compiled program counts the groups
    with more than two non-zeros and a ``jax.debug.callback`` raises when there are any, so
    the call fails where it runs.

    Args:
      weight: at most 2 non-zeros in every group of 4 consecutive entries of a row.

    Returns:
      The ``Sparse24`` form; ``decompress`` gives ``weight`` back exactly.

    Raises:
      ValueError: see ``check_2_4``.
    """
    weight = jnp.asarray(weight)
    check_2_4(weight)
    if not _checks.is_concrete(weight):
        jax.debug.callback(_raise_if_groups_exceed, jnp.sum(_nonzeros_per_group(weight) > 2))
    return _compress(weight)


def group_codes(meta: jax.Array) -> jax.Array:
    """The 4-bit code of every group, ``[..., K/4]`` int32, from metadata ``[..., K/16]``."""
    shifts = 4 * jnp.arange(4, dtype=jnp.int32)
    codes = (meta.astype(jnp.int32)[..., None] >> shifts) & 15
    return codes.reshape(*meta.shape[:-1], meta.shape[-1] * 4)


def expand_groups(values: jax.Array, codes: jax.Array) -> jax.Array:
    """Dense rows ``[..., K]`` from values ``[..., K/2]`` and group codes ``[..., K/4]``.

    Only broadcasting, comparisons, a split of the last axis in two and reshapes: the same
    function decompresses tiles inside the Pallas kernels.
    """
    pairs = values.reshape(*values.shape[:-1], values.shape[-1] // 2, 2)
    first, second = jnp.split(pairs, 2, axis=-1)  # [..., K/4, 1] each
    position = jnp.arange(4, dtype=jnp.int32)
    zero = jnp.zeros((), values.dtype)
    dense = (jnp.where((codes & 3)[..., None] == position, first, zero)
             + jnp.where((codes >> 2)[..., None] == position, second, zero))
    return dense.reshape(*values.shape[:-1], values.shape[-1] * 2)


@jax.jit
def decompress(sparse: Sparse24) -> jax.Array:
    """The dense weight ``[N, K]`` of a ``Sparse24``."""
    return expand_groups(sparse.values, group_codes(sparse.meta))
