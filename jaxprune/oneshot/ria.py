"""RIA: relative importance times activations (Zhang et al. 2024)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxprune.criteria import check_statistic_shape
from jaxprune.oneshot.methods import INPUT_NORMS, ScoreMethod


def ria_score(kernel: jax.Array, sq_norms: jax.Array, alpha: float = 0.5) -> jax.Array:
    """``(|W_ij| / sum_i' |W_i'j| + |W_ij| / sum_j' |W_ij'|) * ||X_i||_2 ** alpha``.

    A weight's magnitude relative to the other weights of its output unit (the column of a Flax
    kernel) plus its magnitude relative to the other weights of its input (the row), times the
    norm of that input over the calibration tokens raised to ``alpha``.

    Args:
      kernel: ``[in, out]``.
      sq_norms: ``sum_t x_ti^2`` per input ``[in]``.
      alpha: the exponent of the activation norm (the paper's ``a``; 0.5 throughout it).

    Returns:
      Scores ``[in, out]`` in float32, higher kept.

    Raises:
      ValueError: for a kernel that is not 2-D or ``sq_norms`` not of shape ``[in]``.

    References:
      Zhang et al. 2024, "Plug-and-Play: An Efficient Post-training Pruning Method for Large
      Language Models" (ICLR 2024), equation of relative importance and activations.
    """
    check_statistic_shape("sq_norms", kernel, sq_norms)
    w = jnp.abs(kernel.astype(jnp.float32))
    relative = w / jnp.sum(w, axis=0, keepdims=True) + w / jnp.sum(w, axis=1, keepdims=True)
    return relative * jnp.sqrt(sq_norms)[:, None] ** alpha


@dataclasses.dataclass(frozen=True)
class _RIAScore:
    """``ria_score`` with its exponent bound; compared by value, so ``jit`` compiles it once
    per exponent and layer shape."""

    alpha: float

    def __call__(self, kernel: jax.Array, stats) -> jax.Array:
        return ria_score(kernel, stats.sq_norms, self.alpha)


def ria_method(ria_alpha: float = 0.5) -> ScoreMethod:
    """RIA as a one-shot method: the engine collects input norms, selection keeps the best of
    each group (per output, as in the paper, or N:M).

    Args:
      ria_alpha: the exponent of the activation norm (``ria_score``'s ``alpha``).

    Returns:
      A ``ScoreMethod`` named ``ria``.

    Raises:
      ValueError: for a negative or non-numeric ``ria_alpha``.

    References:
      Zhang et al. 2024, "Plug-and-Play: An Efficient Post-training Pruning Method for Large
      Language Models".
    """
    if isinstance(ria_alpha, bool) or not isinstance(ria_alpha, int | float) or not ria_alpha >= 0:
        raise ValueError(f"ria_alpha must be a number >= 0, got {ria_alpha!r}")
    return ScoreMethod(_RIAScore(float(ria_alpha)), statistic=INPUT_NORMS, name="ria")
