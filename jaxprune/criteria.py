"""Importance criteria: ``(params, stats) -> scores``, higher scores are kept.

Every criterion takes the parameter tree and a ``stats`` tree of whatever calibration or
training collected (input Gram matrices, input column norms, gradients), and returns a tree of
scores with the structure and shapes of ``params``. Criteria that need no statistics accept
``stats=None``, so methods such as OBD, Wanda or Taylor plug into the same callers.

A new criterion is usually a function of one weight and its statistic; ``leafwise`` turns it
into a tree criterion::

    @jaxprune.leafwise
    def scaled_magnitude(weight, input_norm):
      return jnp.abs(weight) * input_norm[:, None]

The per-weight functions of the one-shot methods (``wanda_score``, ``obd_score``) live here too,
so the one-shot solvers and tree-level callers share one definition of each criterion.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune import paths

PyTree = Any
Criterion = Callable[[PyTree, PyTree], PyTree]


def leafwise(score_fn: Callable[[jax.Array, Any], jax.Array]) -> Criterion:
    """Lifts a per-weight score function to a criterion over trees.

    Args:
      score_fn: ``(weight, stat) -> score`` for one leaf; ``stat`` is the matching leaf of the
        ``stats`` tree, or ``None`` when the whole ``stats`` is ``None``.

    Returns:
      A criterion ``(params, stats=None) -> scores``. ``stats`` must have the structure of
      ``params``; where it holds ``None`` the score is ``None`` too, so ``score_fn`` only
      sees real statistics and selection refuses to prune a leaf it could not score.
    """

    @functools.wraps(score_fn)
    def criterion(params: PyTree, stats: PyTree = None) -> PyTree:
        if stats is None:
            return jax.tree.map(lambda w: score_fn(w, None), params)
        paths.check_same_structure(params, stats, reference_name="params", other_name="stats")
        return jax.tree.map(
            lambda w, s: None if s is None else score_fn(w, s), params, stats,
            is_leaf=paths.is_none,
        )

    return criterion


def magnitude(params: PyTree, stats: PyTree = None) -> PyTree:
    """Scores each weight by its absolute value, in float32.

    Args:
      params: the parameter tree.
      stats: unused; magnitude needs no statistics.

    Returns:
      ``|w|`` as float32 for every leaf.

    References:
      Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks".
    """
    del stats
    return jax.tree.map(magnitude_score, params)


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


def magnitude_score(weight: jax.Array, stat: Any = None) -> jax.Array:
    """``|W|`` of one leaf, in float32 (``stat`` unused)."""
    del stat
    return jnp.abs(weight.astype(jnp.float32))


def wanda_score(kernel: jax.Array, sq_norms: jax.Array) -> jax.Array:
    """``|W_ij| * ||X_i||_2``: weight magnitude times the norm of the input it multiplies.

    Args:
      kernel: ``[in, out]``.
      sq_norms: ``sum_t x_ti^2`` per input ``[in]``.

    Returns:
      Scores ``[in, out]`` in float32.

    Raises:
      ValueError: for a kernel that is not 2-D or ``sq_norms`` not of shape ``[in]``.

    References:
      Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models".
    """
    check_statistic_shape("sq_norms", kernel, sq_norms)
    return jnp.abs(kernel.astype(jnp.float32)) * jnp.sqrt(sq_norms)[:, None]


def obd_score(kernel: jax.Array, hessian_diag: jax.Array) -> jax.Array:
    """Optimal Brain Damage saliency ``w^2 * h`` (the constant 1/2 dropped).

    Args:
      kernel: ``[in, out]``.
      hessian_diag: the Hessian diagonal, either per input ``[in]`` (the layer-wise
        reconstruction loss, whose Hessian is ``2 X^T X``: pass ``sum_t x_ti^2``) or per weight
        ``[in, out]`` (the empirical Fisher diagonal of the LM loss).

    Returns:
      Scores ``[in, out]`` in float32.

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


# Tree criteria of the calibration methods: ``stats`` holds each kernel's input squared norms
# (Wanda) or Hessian diagonal (OBD), ``None`` for parameters left alone.
wanda = leafwise(wanda_score)
obd = leafwise(obd_score)


def random_criterion(key: jax.Array) -> Criterion:
    """Returns a criterion giving every weight an independent uniform score.

    The baseline every pruning paper compares against. Leaf ``i`` (in flattening order) draws
    with ``jax.random.fold_in(key, i)``, so the same key gives the same scores and the scores
    of one leaf do not depend on the shapes of the others.

    Args:
      key: a ``jax.random`` key.

    Returns:
      A criterion ``(params, stats=None) -> scores`` with float32 scores in [0, 1).
    """

    def criterion(params: PyTree, stats: PyTree = None) -> PyTree:
        del stats
        leaves, treedef = jax.tree.flatten(params)
        scores = [
            jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(w), jnp.float32)
            for i, w in enumerate(leaves)
        ]
        return jax.tree.unflatten(treedef, scores)

    return criterion
