"""Wanda++'s regional gradient score (Yang et al., ACL Findings 2025).

Wanda scores a weight by ``|W_ij| ||X_i||``. Wanda++ adds how much the weight moves its decoder
block's output: for each calibration window ``x`` the gradient of the block output's norm
``||f(x)||_2`` with respect to the kernel, squared and averaged over the windows, then its
square root ``G``. The score is ``|W_ij| (alpha G_ij + ||X_i||)`` with ``alpha = 100``. The
gradients are taken through the dense block on the inputs the pruned prefix gives it, one
block at a time, so no backward pass through the whole model is needed.

As a one-shot method this is a ``ScoreMethod`` whose statistic is ``REGIONAL_GRADIENT``: the
engine collects the inputs' norms and, per pruned kernel, ``G`` (``regional_gradients``), and
hands the method a ``RegionalStats``. With a block reconstruction it is the whole of Wanda++
(its regional optimisation: ``jaxprune.oneshot.reconstruct``), applied once per block rather
than alternated with re-pruning over five rounds as in the paper.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune import paths
from jaxprune._checks import check_real
from jaxprune.criteria import check_statistic_shape
from jaxprune.oneshot.methods import ScoreMethod
from jaxprune.oneshot.reconstruct import split_kernels
from jaxprune.oneshot.stats import InputStats


@dataclasses.dataclass(frozen=True)
class RegionalStatistic:
    """The statistic kind of Wanda++: the inputs' sums and each kernel's regional gradient."""

    name: str = "regional gradient"


REGIONAL_GRADIENT = RegionalStatistic()


class RegionalStats(NamedTuple):
    """What a regional-gradient method sees for one kernel.

    Attributes:
      inputs: the layer's ``InputStats``.
      gradient: ``G``, the root mean square over calibration windows of the gradient of the
        block output's norm with respect to the kernel ``[in, out]``.
    """

    inputs: InputStats
    gradient: jax.Array


@functools.partial(jax.jit, static_argnums=0)
def _squared_gradients(graphdef, kernels, rest, h, cos, sin):
    """Per-kernel sums over the batch's windows of the squared gradient of each window's
    block-output norm."""
    def window_norm(current, window):
        out = nnx.merge(graphdef, current, rest)(window[None], cos, sin)
        return jnp.sqrt(jnp.sum(jnp.square(out.astype(jnp.float32))))

    grads = jax.vmap(jax.grad(window_norm), in_axes=(None, 0))(kernels, h)
    return jax.tree.map(lambda g: jnp.sum(jnp.square(g.astype(jnp.float32)), axis=0), grads)


def regional_gradients(block, names, inputs: list, cos, sin) -> dict[str, jax.Array]:
    """``G`` of each named kernel of ``block`` (module docstring).

    Args:
      block: the dense block (an NNX module).
      names: linear-layer names within the block (``"mlp/down_proj"``).
      inputs: the block's calibration inputs, one array ``[windows, length, hidden]`` per batch.
      cos, sin: the RoPE tables of the calibration length.

    Returns:
      ``{name: G [in, out]}`` in float32.

    References:
      Yang et al. 2025, "Wanda++: Pruning Large Language Models via Regional Gradients".
    """
    graphdef, kernels, rest = split_kernels(block, names)
    total, windows = None, 0
    for h in inputs:
        sums = _squared_gradients(graphdef, kernels, rest, h, cos, sin)
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
        windows += h.shape[0]
    flat = dict(paths.leaves_with_paths(total))
    return {name: jnp.sqrt(flat[f"{name}/kernel"] / windows) for name in names}


def rgs_score(kernel: jax.Array, sq_norms: jax.Array, gradient: jax.Array,
              alpha: float = 100.0) -> jax.Array:
    """``|W_ij| (alpha G_ij + ||X_i||_2)``, Wanda++'s regional gradient score.

    Args:
      kernel: ``[in, out]``.
      sq_norms: ``sum_t x_ti^2`` per input ``[in]``.
      gradient: ``G`` ``[in, out]`` (``regional_gradients``).
      alpha: the weight of the gradient term (100 in the paper).

    Returns:
      Scores ``[in, out]`` in float32, higher kept.

    Raises:
      ValueError: for statistics of the wrong shapes.
    """
    check_statistic_shape("sq_norms", kernel, sq_norms)
    if gradient.shape != kernel.shape:
        raise ValueError(f"gradient must have the kernel's shape {kernel.shape}, got "
                         f"{gradient.shape}")
    w = jnp.abs(kernel.astype(jnp.float32))
    return w * (alpha * gradient.astype(jnp.float32) + jnp.sqrt(sq_norms)[:, None])


@dataclasses.dataclass(frozen=True)
class _RGSScore:
    """``rgs_score`` with its ``alpha`` bound (hashable, for ``jit``)."""

    alpha: float

    def __call__(self, kernel, stats: RegionalStats):
        return rgs_score(kernel, stats.inputs.sq_norms, stats.gradient, self.alpha)


def wanda_pp_method(rgs_alpha: float = 100.0) -> ScoreMethod:
    """Wanda++'s regional gradient score as a one-shot method.

    Args:
      rgs_alpha: the weight of the gradient term.

    Returns:
      A ``ScoreMethod`` named ``wanda_pp`` with statistic ``REGIONAL_GRADIENT``.

    Raises:
      TypeError, ValueError: for a negative or non-finite ``rgs_alpha``.

    References:
      Yang et al. 2025, "Wanda++: Pruning Large Language Models via Regional Gradients".
    """
    check_real("rgs_alpha", rgs_alpha, minimum=0)
    return ScoreMethod(_RGSScore(float(rgs_alpha)), statistic=REGIONAL_GRADIENT,
                       name="wanda_pp")
