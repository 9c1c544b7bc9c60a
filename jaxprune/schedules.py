"""Sparsity schedules: pure, jit-able functions ``step -> sparsity``.

Each factory checks its arguments once and returns a function of the step (a Python int or an
integer array, traced or not) that returns a float32 scalar array.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxprune import _checks

Schedule = Callable[[int | jax.Array], jax.Array]


def constant_schedule(sparsity: float) -> Schedule:
    """The same sparsity at every step.

    Args:
      sparsity: fraction in [0, 1).

    Returns:
      A schedule.

    Raises:
      TypeError, ValueError: if ``sparsity`` is not in [0, 1).
    """
    _checks.check_fraction("sparsity", sparsity, allow_traced=False)

    def schedule(step):
        del step
        return jnp.asarray(sparsity, jnp.float32)

    return schedule


def one_shot_schedule(sparsity: float, step: int) -> Schedule:
    """Dense before ``step``, ``sparsity`` from ``step`` on.

    Args:
      sparsity: fraction in [0, 1) reached at once.
      step: the step at which pruning happens, >= 0.

    Returns:
      A schedule.

    Raises:
      TypeError, ValueError: for a sparsity outside [0, 1) or a negative step.
    """
    _checks.check_fraction("sparsity", sparsity, allow_traced=False)
    prune_step = _checks.check_int("step", step, minimum=0)

    def schedule(step):
        return jnp.where(jnp.asarray(step) >= prune_step, sparsity, 0.0).astype(jnp.float32)

    return schedule


def polynomial_schedule(
    initial: float,
    final: float,
    begin: int,
    end: int,
    *,
    frequency: int = 1,
    power: float = 3.0,
) -> Schedule:
    """Gradual pruning schedule of Zhu & Gupta: fast at first, slower as sparsity rises.

    At an update step ``t`` in ``[begin, end]`` the sparsity is
    ``final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power``. Update steps
    are ``begin, begin + frequency, begin + 2 * frequency, ...`` and ``end`` itself; between
    them the value of the last update holds. Before ``begin`` it is ``initial``, from ``end``
    on ``final``. With ``power=3`` (the default) this is the paper's cubic schedule.

    Args:
      initial: sparsity at ``begin``, in [0, 1).
      final: sparsity from ``end`` on, in [0, 1).
      begin: first update step, >= 0.
      end: last update step, > ``begin``.
      frequency: steps between updates (the paper's Δt), >= 1.
      power: exponent, > 0.

    Returns:
      A schedule, monotone between ``initial`` and ``final``.

    Raises:
      TypeError, ValueError: for a fraction outside [0, 1), ``end <= begin``, a frequency
        below 1, a negative ``begin`` or a power that is not positive.

    References:
      Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of pruning for model
      compression", equation (1).
    """
    _checks.check_fraction("initial", initial, allow_traced=False)
    _checks.check_fraction("final", final, allow_traced=False)
    begin = _checks.check_int("begin", begin, minimum=0)
    end = _checks.check_int("end", end, minimum=0)
    frequency = _checks.check_int("frequency", frequency, minimum=1)
    if end <= begin:
        raise ValueError(f"end must be after begin, got begin={begin}, end={end}")
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
        raise ValueError(f"power must be a number > 0, got {power!r}")

    def schedule(step):
        step = jnp.asarray(step, jnp.int32)
        last_update = begin + (jnp.maximum(step - begin, 0) // frequency) * frequency
        last_update = jnp.where(step >= end, end, jnp.minimum(last_update, end))
        progress = (last_update - begin).astype(jnp.float32) / (end - begin)
        value = final + (initial - final) * (1.0 - progress) ** power
        return value.astype(jnp.float32)

    return schedule
