"""Per-layer importance scores of the one-shot methods, from calibration statistics.

Each function maps a Flax kernel ``[in, out]`` and a statistic to scores of the kernel's shape;
higher is kept. Selection then applies the comparison group (``jaxprune.selection``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def magnitude_scores(kernel: jax.Array) -> jax.Array:
    """``|W|``.

    References:
      Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks".
    """
    return jnp.abs(kernel.astype(jnp.float32))


def wanda_scores(kernel: jax.Array, sq_norms: jax.Array) -> jax.Array:
    """``|W_ij| * ||X_i||_2``: weight magnitude times the norm of the input it multiplies.

    Args:
      kernel: ``[in, out]``.
      sq_norms: ``sum_t x_ti^2`` per input ``[in]``.

    References:
      Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models".
    """
    return jnp.abs(kernel.astype(jnp.float32)) * jnp.sqrt(sq_norms)[:, None]


def obd_scores(kernel: jax.Array, hessian_diag: jax.Array) -> jax.Array:
    """Optimal Brain Damage saliency ``w^2 * h`` (the constant 1/2 dropped).

    Args:
      kernel: ``[in, out]``.
      hessian_diag: the Hessian diagonal, either per input ``[in]`` (the layer-wise
        reconstruction loss, whose Hessian is ``2 X^T X``: pass ``sum_t x_ti^2``) or per weight
        ``[in, out]`` (the empirical Fisher diagonal of the LM loss).

    References:
      LeCun, Denker & Solla 1990, "Optimal Brain Damage".
    """
    hessian_diag = jnp.asarray(hessian_diag, jnp.float32)
    if hessian_diag.ndim == 1:
        hessian_diag = hessian_diag[:, None]
    return kernel.astype(jnp.float32) ** 2 * hessian_diag
