"""Calibration statistics of a linear layer's inputs, accumulated as sums over batches.

Sums (not means) make the accumulation associative: batches can arrive in any order and
partial sums from several devices add up to the same result.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class InputStats(NamedTuple):
    """Sums over calibration tokens of a layer's input ``x`` (``[in]``).

    Attributes:
      sq_norms: ``sum_t x_tj^2``, the squared input column norms (Wanda's ``||X_j||^2``, the
        diagonal of the Gram matrix).
      gram: ``sum_t x_t x_t^T`` ``[in, in]``, or ``None`` when not collected.
      count: number of tokens summed.
      sums: ``sum_t x_tj`` ``[in]`` (the first moment, for DSnoT's expected error), or
        ``None`` when a caller built the statistics without it.
      windows: number of calibration windows (sequences) summed, or ``None`` likewise.
    """

    sq_norms: jax.Array
    gram: jax.Array | None
    count: jax.Array
    sums: jax.Array | None = None
    windows: jax.Array | None = None


def batch_input_stats(x: jax.Array, *, with_gram: bool) -> InputStats:
    """Statistics of one batch ``[windows, length, in]`` (or ``[tokens, in]``: one window), in
    float32."""
    flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    gram = flat.T @ flat if with_gram else None
    windows = math.prod(x.shape[:-2])
    return InputStats(jnp.sum(flat * flat, axis=0), gram, jnp.asarray(flat.shape[0], jnp.int32),
                      jnp.sum(flat, axis=0), jnp.asarray(windows, jnp.int32))


def _add_optional(a: jax.Array | None, b: jax.Array | None) -> jax.Array | None:
    return None if a is None or b is None else a + b


def add_input_stats(a: InputStats | None, b: InputStats) -> InputStats:
    """Sum of two statistics (``a`` may be ``None``, the empty sum)."""
    if a is None:
        return b
    return InputStats(a.sq_norms + b.sq_norms, _add_optional(a.gram, b.gram), a.count + b.count,
                      _add_optional(a.sums, b.sums), _add_optional(a.windows, b.windows))


class OutputError(NamedTuple):
    """How a change ``D = W_new - W`` of a kernel ``[in, out]`` moves the layer's outputs over
    the calibration tokens ``x_t`` its ``InputStats`` summed.

    Attributes:
      mse: ``sum_t ||x_t D||^2 / tokens``: the layer-wise loss SparseGPT and ALPS minimise.
      mean_sq: ``||mean_t x_t D||^2``: the squared mean shift of the outputs, the part of it
        that DSnoT drives to zero.
    """

    mse: float
    mean_sq: float


def output_error(stats: InputStats, delta: jax.Array) -> OutputError:
    """The ``OutputError`` of a kernel change ``delta [in, out]`` from statistics with the
    Gram matrix and the sums.

    Raises:
      ValueError: for statistics without them.
    """
    if stats.gram is None or stats.sums is None:
        raise ValueError("output_error needs the Gram matrix and the sums (with_gram=True)")
    delta = delta.astype(jnp.float32)
    mse = jnp.sum(delta * (stats.gram @ delta)) / stats.count
    mean = (stats.sums / stats.count) @ delta
    return OutputError(float(mse), float(jnp.sum(mean * mean)))
