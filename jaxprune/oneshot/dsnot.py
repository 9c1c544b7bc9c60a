"""DSnoT: training-free refinement of any method's mask (Zhang et al., ICLR 2024).

Pruning output unit ``r`` of a linear layer changes its output, in expectation over the
calibration tokens, by ``e_r = sum_{i pruned} W_ri E[x_i]``. DSnoT repeatedly swaps one pruned
weight back in and one kept weight out, per output unit, to drive ``e_r`` towards zero:

* the weight regrown is the pruned one whose ``W_ri E[x_i] / Var[x_i]^p`` is largest when
  ``e_r > 0`` (smallest when ``e_r <= 0``): the most error removed per unit of the input's
  spread;
* the weight pruned is the kept one of least Wanda importance ``|W_ri| ||X_i||`` among those
  whose ``W_ri E[x_i]`` has the sign opposite to ``e_r`` (for N:M: the least important kept
  weight of the regrown weight's group, so every group keeps N);
* a unit stops when ``|e_r|`` falls to the threshold (for N:M also when a swap would flip the
  sign of ``e_r``), when it runs out of candidates, or after the cycle budget.

Both candidate lists are ranked once, before the swaps (as in the paper's code), and each swap
moves one step along them. Swaps keep every unit's count of kept weights, so the sparsity and
the N:M pattern of the base mask are kept exactly. The kernel returned is the dense kernel
under the refined mask: DSnoT changes which weights are kept, never their values (a base
method's own weight update, SparseGPT's, is not kept; in DSnoT's code SparseGPT contributes
only its saliency too).

Units follow the paper's code: ``E[x_i]`` enters ``e_r`` as the mean over calibration windows
of the sum over each window's tokens, so the default threshold of 0.1 means what it means
there; ``Var[x_i]`` is the variance over all calibration tokens.

Flax kernels are ``[in, out]``: an output unit is a column here, a row in the paper.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxprune._checks import check_int, check_real
from jaxprune.oneshot.methods import (
    WANDA,
    LayerPruning,
    method_name,
    statistic_for,
    wrapper_statistic,
)
from jaxprune.patterns import GLOBAL, Pattern

# Inputs whose calibration variance is below this are treated as having this variance, so the
# regrowing score stays finite (such an input is constant: its error is all in the mean).
_MIN_VARIANCE = 1e-12


class _Swaps(NamedTuple):
    """The state of the swaps, per output unit: the mask (``True`` pruned, ``[out, in]``),
    the expected error, whether the unit still swaps, the positions reached in the ranked
    lists, which weights may still be pruned, and the swaps made."""

    pruned: jax.Array
    error: jax.Array
    active: jax.Array
    low: jax.Array
    high: jax.Array
    neg: jax.Array
    pos: jax.Array
    cuttable: jax.Array
    swaps: jax.Array
    cycle: jax.Array


class _Layer(NamedTuple):
    """What the swaps read, fixed before the first: per-weight expected errors and Wanda
    importances ``[out, in]``, the ranked lists, and the counts of kept weights with negative
    and positive expected errors ``[out]``."""

    expected: jax.Array
    importance: jax.Array
    grow_order: jax.Array
    cut_order: jax.Array
    n_neg: jax.Array
    n_pos: jax.Array
    initial_sign: jax.Array


def _rank_candidates(pruned, expected, grow_score, importance):
    """Per output unit: pruned weights by regrowing score (kept ones last); kept weights whose
    expected error is negative, then positive, each by Wanda importance (the rest last)."""
    grow_order = jnp.argsort(jnp.where(pruned, grow_score, jnp.inf), axis=1, stable=True)
    side = jnp.where(pruned | (expected == 0), 2, jnp.where(expected < 0, 0, 1))
    by_importance = jnp.argsort(importance, axis=1, stable=True)
    side_order = jnp.argsort(jnp.take_along_axis(side, by_importance, axis=1), axis=1,
                             stable=True)
    cut_order = jnp.take_along_axis(by_importance, side_order, axis=1)
    return grow_order, cut_order, jnp.sum(side == 0, axis=1), jnp.sum(side == 1, axis=1)


def _take(array, index):
    return jnp.take_along_axis(array, index[:, None], axis=1)[:, 0]


def _cut_unstructured(s: _Swaps, layer: _Layer):
    """The kept weight to prune: the next of the list whose sign opposes the error."""
    from_positive = s.error < 0
    cut = _take(layer.cut_order, jnp.where(from_positive, s.pos, s.neg))
    available = jnp.where(from_positive, s.pos < layer.n_neg + layer.n_pos, s.neg < layer.n_neg)
    return cut, available, s.neg + ~from_positive, s.pos + from_positive


def _cut_in_group(s: _Swaps, layer: _Layer, grow, group: int):
    """The kept weight to prune: the least important still prunable one of ``grow``'s group
    of M, if the swap keeps the error's initial sign."""
    start = grow - grow % group
    members = start[:, None] + jnp.arange(group)[None, :]
    ranked = jnp.where(jnp.take_along_axis(s.cuttable, members, axis=1),
                       jnp.take_along_axis(layer.importance, members, axis=1), jnp.inf)
    cut = start + jnp.argmin(ranked, axis=1)
    after = s.error + _take(layer.expected, cut) - _take(layer.expected, grow)
    available = jnp.any(jnp.isfinite(ranked), axis=1) & (jnp.sign(after) == layer.initial_sign)
    return cut, available, s.neg, s.pos


def _swap_once(s: _Swaps, layer: _Layer, threshold, group: int) -> _Swaps:
    """One cycle: each active unit regrows one weight and prunes one, or stops."""
    grow_high = s.error > 0
    grow = _take(layer.grow_order, jnp.where(grow_high, s.high, s.low))
    if group:
        cut, can_cut, neg, pos = _cut_in_group(s, layer, grow, group)
    else:
        cut, can_cut, neg, pos = _cut_unstructured(s, layer)
    update = s.active & (jnp.abs(s.error) > threshold) & (s.low <= s.high) & can_cut
    units = jnp.arange(s.error.shape[0])
    pruned = s.pruned.at[units, cut].set(s.pruned[units, cut] | update)
    pruned = pruned.at[units, grow].set(pruned[units, grow] & ~update)
    change = _take(layer.expected, cut) - _take(layer.expected, grow)
    return _Swaps(pruned, s.error + jnp.where(update, change, 0.0), update,
                  s.low + ~grow_high, s.high - grow_high, neg, pos,
                  s.cuttable.at[units, cut].set(s.cuttable[units, cut] & ~update),
                  s.swaps + update, s.cycle + 1)


@functools.partial(jax.jit, static_argnames=("cycles", "group"))
def dsnot_refine(kernel: jax.Array, keep: jax.Array, sq_norms: jax.Array, sums: jax.Array,
                 count: jax.Array, windows: jax.Array, *, cycles: int, threshold: float,
                 var_power: float, group: int = 0) -> tuple[jax.Array, jax.Array]:
    """DSnoT's swaps on one kernel's mask (module docstring).

    Args:
      kernel: the dense kernel ``[in, out]``.
      keep: the base mask ``[in, out]``, ``True`` kept.
      sq_norms, sums: ``sum_t x_ti^2`` and ``sum_t x_ti`` over the calibration tokens ``[in]``.
      count, windows: the numbers of calibration tokens and windows summed.
      cycles: the most swaps per output unit.
      threshold: a unit stops once ``|e_r|`` is at most this.
      var_power: the exponent ``p`` of the variance in the regrowing score.
      group: M of an N:M mask (swaps stay within a group of M inputs); 0 for unstructured.

    Returns:
      ``(refined mask [in, out], swaps made per output unit [out])``.

    References:
      Zhang et al. 2024, "Dynamic Sparse No Training: Training-Free Fine-tuning for Sparse
      LLMs" (ICLR 2024), Algorithm 1.
    """
    w, pruned = kernel.T.astype(jnp.float32), ~keep.T
    mean = sums / count
    variance = jnp.maximum(sq_norms / count - mean * mean, _MIN_VARIANCE)
    expected = w * (sums / windows)[None, :]
    importance = jnp.abs(w) * jnp.sqrt(sq_norms)[None, :]
    grow_order, cut_order, n_neg, n_pos = _rank_candidates(
        pruned, expected, expected / variance[None, :] ** var_power, importance)
    error = jnp.sum(jnp.where(pruned, expected, 0.0), axis=1)
    layer = _Layer(expected, importance, grow_order, cut_order, n_neg, n_pos, jnp.sign(error))
    zeros = jnp.zeros_like(n_neg)
    state = _Swaps(pruned, error, jnp.ones_like(error, bool), zeros,
                   jnp.sum(pruned, axis=1) - 1, zeros, n_neg, ~pruned, zeros, jnp.asarray(0))
    state = lax.while_loop(lambda s: jnp.any(s.active) & (s.cycle < cycles),
                           lambda s: _swap_once(s, layer, threshold, group), state)
    return ~state.pruned.T, state.swaps


@dataclasses.dataclass(frozen=True)
class DSnoT:
    """A base method's mask refined by DSnoT's swaps (``dsnot_refine``).

    Attributes:
      base: the method choosing the initial mask (Wanda, magnitude, SparseGPT, RIA, ...); one
        with a whole-model statistic (Fisher) is refused.
      cycles: the most swaps per output unit (the paper's code: 50 in its scripts).
      threshold: a unit stops once its expected error is at most this (0.1 there).
      var_power: exponent of the input variance in the regrowing score (1 there).

    Raises:
      ValueError: for a base with a whole-model statistic or a setting out of range.

    References:
      Zhang et al. 2024, "Dynamic Sparse No Training: Training-Free Fine-tuning for Sparse
      LLMs" (ICLR 2024).
    """

    base: Any = WANDA
    cycles: int = 50
    threshold: float = 0.1
    var_power: float = 1.0

    def __post_init__(self):
        wrapper_statistic(self.base, "DSnoT")
        check_int("dsnot_cycles", self.cycles, minimum=1)
        check_real("dsnot_threshold", self.threshold, minimum=0)
        check_real("dsnot_var_power", self.var_power, minimum=0)

    @property
    def statistic(self):
        """The base's input statistic, or the input norms DSnoT itself needs."""
        return wrapper_statistic(self.base, "DSnoT")

    @property
    def name(self) -> str:
        """``<base>+dsnot``."""
        return f"{method_name(self.base)}+dsnot"

    def check(self, pattern: Pattern) -> None:
        """Refuses what the base refuses, and global selection (DSnoT swaps within an output
        unit, which needs calibration statistics).

        Raises:
          ValueError: naming the pattern.
        """
        if pattern.kind == GLOBAL:
            raise ValueError(f"method {self.name!r} swaps weights within each output unit; "
                             f"pattern 'global' is not supported")
        self.base.check(pattern)

    def prune_layer(self, kernel, statistic, *, sparsity, pattern, path) -> LayerPruning:
        """The base's mask on ``kernel``, refined; the dense kernel under it.

        Raises:
          FloatingPointError: for calibration statistics that are not finite.
        """
        base = self.base.prune_layer(kernel, statistic_for(self.base, statistic),
                                     sparsity=sparsity, pattern=pattern, path=path)
        if statistic.sums is None or statistic.windows is None:
            raise ValueError(f"method {self.name!r} on {path!r} needs the inputs' sums and "
                             f"window count (InputStats.sums, .windows), which are missing")
        if not bool(jnp.all(jnp.isfinite(statistic.sums))
                    & jnp.all(jnp.isfinite(statistic.sq_norms))):
            raise FloatingPointError(f"calibration statistics of {path!r} contain NaN or Inf; "
                                     f"DSnoT cannot rank swaps from them")
        keep, swaps = dsnot_refine(
            kernel, base.keep, statistic.sq_norms, statistic.sums, statistic.count,
            statistic.windows, cycles=self.cycles, threshold=self.threshold,
            var_power=self.var_power, group=pattern.m if pattern.is_n_of_m else 0)
        info = {**base.info, "dsnot_swaps": int(jnp.sum(swaps))}
        return LayerPruning(jnp.where(keep, kernel, jnp.zeros((), kernel.dtype)), keep, info)


def dsnot_refinement(dsnot_cycles: int = 50, dsnot_threshold: float = 0.1,
                     dsnot_var_power: float = 1.0):
    """The config boundary's DSnoT: a function from a base method to ``DSnoT(base, ...)``.

    Args:
      dsnot_cycles, dsnot_threshold, dsnot_var_power: ``DSnoT``'s settings.

    Returns:
      ``base -> DSnoT(base, dsnot_cycles, dsnot_threshold, dsnot_var_power)``.

    Raises:
      ValueError: for a setting out of range (checked now, before any model work).
    """
    DSnoT(WANDA, dsnot_cycles, dsnot_threshold, dsnot_var_power)
    return functools.partial(DSnoT, cycles=dsnot_cycles, threshold=dsnot_threshold,
                             var_power=dsnot_var_power)
