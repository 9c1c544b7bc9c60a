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


def check_statistic_shape(name: str, kernel: jax.Array, statistic: jax.Array,
                          allowed: tuple[str, ...] = ("in",)) -> None:
    """Checks that a statistic fits a kernel ``[in, out]``: per input (``"in"``), per weight
    (``"in,out"``) or an input Gram matrix (``"in,in"``).

    Shapes are static, so this also holds under ``jit``; without it a statistic of length 1
    would broadcast silently and one of another length would fail deep inside ``jnp``.

    Raises:
      ValueError: naming the statistic, its shape, the kernel's shape and the shapes allowed.
    """
    if jnp.ndim(kernel) != 2:
        raise ValueError(f"the kernel must be 2-D [in, out], got shape {jnp.shape(kernel)}")
    fan_in, fan_out = jnp.shape(kernel)
    shapes = {"in": (fan_in,), "in,out": (fan_in, fan_out), "in,in": (fan_in, fan_in)}
    wanted = [shapes[a] for a in allowed]
    if tuple(jnp.shape(statistic)) not in wanted:
        raise ValueError(f"{name} has shape {tuple(jnp.shape(statistic))}, but the kernel "
                         f"{tuple(jnp.shape(kernel))} needs {' or '.join(map(str, wanted))}")


def wanda_scores(kernel: jax.Array, sq_norms: jax.Array) -> jax.Array:
    """``|W_ij| * ||X_i||_2``: weight magnitude times the norm of the input it multiplies.

    Args:
      kernel: ``[in, out]``.
      sq_norms: ``sum_t x_ti^2`` per input ``[in]``.

    Raises:
      ValueError: for a kernel that is not 2-D or ``sq_norms`` not of shape ``[in]``.

    References:
      Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models".
    """
    check_statistic_shape("sq_norms", kernel, sq_norms)
    return jnp.abs(kernel.astype(jnp.float32)) * jnp.sqrt(sq_norms)[:, None]


def obd_scores(kernel: jax.Array, hessian_diag: jax.Array) -> jax.Array:
    """Optimal Brain Damage saliency ``w^2 * h`` (the constant 1/2 dropped).

    Args:
      kernel: ``[in, out]``.
      hessian_diag: the Hessian diagonal, either per input ``[in]`` (the layer-wise
        reconstruction loss, whose Hessian is ``2 X^T X``: pass ``sum_t x_ti^2``) or per weight
        ``[in, out]`` (the empirical Fisher diagonal of the LM loss).

    Raises:
      ValueError: for a kernel that is not 2-D or a ``hessian_diag`` of another shape.

    References:
      LeCun, Denker & Solla 1990, "Optimal Brain Damage".
    """
    check_statistic_shape("hessian_diag", kernel, hessian_diag, ("in", "in,out"))
    hessian_diag = jnp.asarray(hessian_diag, jnp.float32)
    if hessian_diag.ndim == 1:
        hessian_diag = hessian_diag[:, None]
    return kernel.astype(jnp.float32) ** 2 * hessian_diag
