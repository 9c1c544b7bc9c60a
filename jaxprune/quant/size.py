"""How many bytes a model takes on disk with some kernels quantized."""

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


def qarray_bytes(quantized) -> int:
    """Bytes of a ``qwix.QArray``: codes packed at their bit width, half-precision scales, zero
    points packed like the codes."""
    bits = qarray_bits(quantized)
    total = math.ceil(quantized.qvalue.size * bits / 8)
    total += HALF_PRECISION_BYTES * quantized.scale.size
    if quantized.zero_point is not None:
        total += math.ceil(quantized.zero_point.size * bits / 8)
    return total


def model_storage_bytes(state, quantized: dict) -> int:
    """Bytes of a model's parameters: the ``quantized`` kernels (``{path: QArray}``) at their
    packed size, every other parameter in half precision (pruned zeros included: no sparse
    format is counted here).

    Args:
      state: the model's parameter state (``nnx.state(model, nnx.Param)``).
      quantized: quantized kernels by path, as ``OneShotResult.quantized`` holds them.

    Returns:
      The total in bytes.
    """
    total = 0
    for path, leaf in paths.leaves_with_paths(state):
        if path in quantized:
            total += qarray_bytes(quantized[path])
        else:
            total += HALF_PRECISION_BYTES * int(np.prod(leaf.shape))
    return total
