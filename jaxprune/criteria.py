"""Importance criteria: ``(params, stats) -> scores``, higher scores are kept.

Every criterion takes the parameter tree and a ``stats`` tree of whatever calibration or
training collected (input Gram matrices, input column norms, gradients), and returns a tree of
scores with the structure and shapes of ``params``. Criteria that need no statistics accept
``stats=None``, so methods such as OBD, Wanda or Taylor plug into the same callers.

A new criterion is usually a function of one weight and its statistic; ``leafwise`` turns it
into a tree criterion::

    @jaxprune.leafwise
    def wanda(weight, input_norm):
      return jnp.abs(weight) * input_norm[:, None]
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
    return jax.tree.map(lambda w: jnp.abs(w.astype(jnp.float32)), params)


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
