"""How many bytes a model takes on disk with some kernels quantized and some 2:4 sparse.

A kernel whose every group of 4 consecutive inputs holds at most 2 non-zeros (codes, for a
quantized one) is counted in jaxprune's 2:4 formats (``jaxprune.kernels.format`` and
``format_int4``): half its values, plus 1 bit of position metadata per weight (a 4-bit code
per group of 4), plus the quantization's scales and zero points. In float16 that is 9 bits per
weight; at int4 with groups of 64, 3.25. Every other tensor is stored whole.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxprune import paths

# Bytes per value of everything not quantized: the float16 (or bfloat16) checkpoints people
# ship, the baseline that quantized sizes are compared with.
HALF_PRECISION_BYTES = 2


def qarray_bits(quantized) -> int:
    """The bit width of a ``qwix.QArray``'s integer codes (4 or 8)."""
    return jnp.iinfo(quantized.qvalue.dtype).bits


def is_2_of_4(kernel) -> bool:
    """Whether a Flax kernel ``[in, out]`` keeps at most 2 of every 4 consecutive inputs of
    each output, with ``in`` a multiple of 16 (the 2:4 formats' layout)."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 2 or kernel.shape[0] % 16:
        return False
    groups = kernel.reshape(kernel.shape[0] // 4, 4, kernel.shape[1])
    return bool(np.all(np.count_nonzero(groups, axis=1) <= 2))


def _sparse24_meta_bytes(size: int) -> int:
    return size // 8  # a 4-bit position code per group of 4 weights


def qarray_bytes(quantized, sparse24: bool = False) -> int:
    """Bytes of a ``qwix.QArray``: codes packed at their bit width, half-precision scales, zero
    points packed like the codes; with ``sparse24``, the 2:4 format's half of the codes and
    its metadata."""
    bits = qarray_bits(quantized)
    size = quantized.qvalue.size
    total = math.ceil((size // 2 if sparse24 else size) * bits / 8)
    total += _sparse24_meta_bytes(size) if sparse24 else 0
    total += HALF_PRECISION_BYTES * quantized.scale.size
    if quantized.zero_point is not None:
        total += math.ceil(quantized.zero_point.size * bits / 8)
    return total


def model_storage_bytes(state, quantized: dict) -> int:
    """Bytes of a model's parameters: the ``quantized`` kernels (``{path: QArray}``) at their
    packed size, every other parameter in half precision; 2:4 sparse kernels in the 2:4
    formats (module docstring), other zeros stored.

    Args:
      state: the model's parameter state (``nnx.state(model, nnx.Param)``).
      quantized: quantized kernels by path, as ``OneShotResult.quantized`` holds them.

    Returns:
      The total in bytes.
    """
    total = 0
    for path, leaf in paths.leaves_with_paths(state):
        if path in quantized:
            codes = quantized[path].qvalue
            total += qarray_bytes(quantized[path], sparse24=is_2_of_4(codes))
        elif is_2_of_4(leaf):
            total += HALF_PRECISION_BYTES * leaf.size // 2 + _sparse24_meta_bytes(leaf.size)
        else:
            total += HALF_PRECISION_BYTES * int(np.prod(leaf.shape))
    return total
