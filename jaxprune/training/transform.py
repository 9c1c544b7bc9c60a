"""``sparse_training``: an optax transformation that prunes while it optimizes.

Wrap any optimizer; the masks, the step count, a PRNG key and (for the straight-through
estimator) the dense weights live in the optimizer state. Every update:

1. on the rule's update steps, the masks are recomputed (``jax.lax.cond``, so one compiled
   step serves every step);
2. gradients of pruned weights are zeroed before the inner optimizer sees them;
3. the returned update of a pruned weight is ``-w``, so ``optax.apply_updates`` leaves it
   exactly ``0.0`` (``w + (-w)`` is exactly zero in IEEE arithmetic) with no call by the user;
4. weights grown by SET or RigL get the update that makes them zero and their optimizer
   moments (every part of the inner state shaped like the parameters) are reset to zero.

With a straight-through rule the inner optimizer updates the dense weights kept in the state
with the dense gradients, and the parameters become the masked dense weights.

Parameters before the first update are whatever the user initialised: a rule whose masks
exist from the start (SET, RigL) zeroes the pruned weights at the first update.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune import paths
from jaxprune.masks import count_kept
from jaxprune.training.algorithms import MaskRule

PyTree = Any


class SparseTrainingState(NamedTuple):
    """State of ``sparse_training``.

    Attributes:
      count: number of updates done (int32).
      masks: the current masks (``True`` = kept; ``None`` for dense leaves).
      key: PRNG key for the rule's randomness, split at every update.
      inner_state: the wrapped optimizer's state.
      dense_params: the dense weights behind the masks (straight-through rules), else None.
    """

    count: jax.Array
    masks: PyTree
    key: jax.Array
    inner_state: optax.OptState
    dense_params: PyTree


def _where_mask(masks, kept, pruned):
    """``kept`` where the mask is True, ``pruned`` elsewhere; dense leaves take ``kept``."""
    return jax.tree.map(lambda m, a, b: a if m is None else jnp.where(m, a, b),
                        masks, kept, pruned, is_leaf=paths.is_none)


def _grown(new_masks, old_masks):
    """Where weights came back at this step; a False scalar for dense leaves (so that the tree
    has a leaf wherever the parameters do, as ``tree_map_params`` needs)."""
    return jax.tree.map(
        lambda new, old: jnp.zeros((), bool) if new is None else new & ~old,
        new_masks, old_masks, is_leaf=paths.is_none)


def sparse_training(inner: optax.GradientTransformation, rule, *,
                    key: jax.Array | None = None) -> optax.GradientTransformationExtraArgs:
    """Wraps ``inner`` so that training keeps the parameters sparse under ``rule``.

    Example::

      rule = jaxprune.training.GradualMagnitude(final_sparsity=0.8, begin=100, end=900,
                                                update_every=100)
      tx = jaxprune.training.sparse_training(optax.adam(1e-3), rule)
      state = tx.init(params)
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)   # pruned weights are exactly 0

    Works with ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` as with a plain pytree loop.

    Args:
      inner: the optimizer (any optax transformation; extra arguments are passed on).
      rule: a mask rule from ``jaxprune.training`` (``GradualMagnitude``, ``Snip``, ``SET``,
        ``RigL``).
      key: PRNG key for the rule's randomness (initial masks of SET and RigL, SET's growth);
        required by those rules.

    Returns:
      An optax ``GradientTransformationExtraArgs``; its ``update`` requires ``params``.

    Raises:
      TypeError: when ``rule`` is not a ``MaskRule``.
      ValueError: when ``rule`` needs a key and none is given.
    """
    if not isinstance(rule, MaskRule):
        raise TypeError(f"rule must be a MaskRule (straight_through, needs_key, init_masks, "
                        f"is_update_step, update_masks), got {rule!r}")
    if rule.needs_key and key is None:
        raise ValueError(f"{type(rule).__name__} draws random masks; pass key=jax.random.key(...)"
                         " or jax.random.PRNGKey(...)")
    if key is None:
        key = jax.random.PRNGKey(0)  # never used by the deterministic rules
    inner = optax.with_extra_args_support(inner)
    straight_through = bool(rule.straight_through)

    def init_fn(params):
        init_key, state_key = jax.random.split(key)
        return SparseTrainingState(
            count=jnp.zeros((), jnp.int32),
            masks=rule.init_masks(params, init_key),
            key=state_key,
            inner_state=inner.init(params),
            dense_params=params if straight_through else None,
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("sparse_training needs the parameters: call "
                             "update(grads, state, params)")
        step_key, next_key = jax.random.split(state.key)
        reference = state.dense_params if straight_through else params
        masks = jax.lax.cond(
            rule.is_update_step(state.count),
            lambda: rule.update_masks(state.masks, reference, updates, state.count, step_key),
            lambda: state.masks,
        )
        if straight_through:
            return _straight_through_update(inner, masks, updates, state, params, next_key,
                                            extra_args)
        return _masked_update(inner, masks, updates, state, params, next_key, extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _straight_through_update(inner, masks, updates, state, params, next_key, extra_args):
    """The straight-through step: the inner optimizer moves the dense copy, and the
    parameters become the dense copy under the masks."""
    inner_updates, inner_state = inner.update(updates, state.inner_state, state.dense_params,
                                              **extra_args)
    dense = optax.apply_updates(state.dense_params, inner_updates)
    step = jax.tree.map(jnp.subtract, dense, params)
    minus_params = jax.tree.map(jnp.negative, params)
    return _where_mask(masks, step, minus_params), SparseTrainingState(
        state.count + 1, masks, next_key, inner_state, dense)


def _masked_update(inner, masks, updates, state, params, next_key, extra_args):
    """The masked step: pruned weights get no gradient and go to zero; a weight grown at this
    step starts from zero with fresh optimizer moments."""
    masked_grads = _where_mask(masks, updates, jax.tree.map(jnp.zeros_like, updates))
    inner_updates, inner_state = inner.update(masked_grads, state.inner_state, params,
                                              **extra_args)
    grown = _grown(masks, state.masks)
    inner_state = optax.tree_utils.tree_map_params(
        inner, lambda v, g: jnp.where(g, jnp.zeros_like(v), v), inner_state, grown)
    kept_not_grown = jax.tree.map(
        lambda m, g: None if m is None else m & ~g, masks, grown, is_leaf=paths.is_none)
    minus_params = jax.tree.map(jnp.negative, params)
    new_updates = _where_mask(kept_not_grown, inner_updates, minus_params)
    return new_updates, SparseTrainingState(state.count + 1, masks, next_key, inner_state, None)


def masked_fraction(state: SparseTrainingState) -> jax.Array:
    """Fraction of the masked weights that are pruned, from the state's masks; traceable (the
    host-side value is ``jaxprune.masks.sparsity(state.masks)``)."""
    kept, total = count_kept(state.masks)
    return 1.0 - kept / max(total, 1)
