"""Mask update rules for training: when the masks change, and to what.

Each rule is a frozen dataclass whose arguments are checked when it is made. The optax
transformation of ``jaxprune.training.transform`` calls, all inside ``jit``:

* ``init_masks(params, key)`` once, from ``init``;
* ``is_update_step(step)``, a traced boolean, at every step;
* ``update_masks(masks, params, grads, step, key)`` on the steps where it is true.

Masks hold a boolean array (``True`` = kept) for every pruned leaf and ``None`` for the leaves
that stay dense (embeddings, norms, biases by default; see ``jaxprune.allocation``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jaxprune import _checks, paths, schedules, selection
from jaxprune import allocation as allocation_lib
from jaxprune.patterns import parse_pattern

PyTree = Any
_ALLOCATIONS = {"uniform": allocation_lib.uniform, "erk": allocation_lib.erk}


def _check_allocation(name: str) -> None:
    if name not in _ALLOCATIONS:
        raise ValueError(f"allocation must be one of {sorted(_ALLOCATIONS)}, got {name!r}")


def _targets(params: PyTree, sparsity: float, name: str, include) -> PyTree:
    """The per-leaf sparsity tree of ``sparsity`` under the named allocation."""
    return _ALLOCATIONS[name](params, sparsity, include=include)


def _dense_masks(params: PyTree, targets: PyTree) -> PyTree:
    """All-``True`` masks for the leaves with a target, ``None`` elsewhere."""
    return jax.tree.map(lambda t, w: None if t is None else jnp.ones(jnp.shape(w), bool),
                        targets, params, is_leaf=paths.is_none)


def _masked_magnitude(masks: PyTree, params: PyTree) -> PyTree:
    """|w| where kept and -1 where pruned: pruned weights stay pruned first."""
    return jax.tree.map(
        lambda m, w: None if m is None else jnp.where(m, jnp.abs(w.astype(jnp.float32)), -1.0),
        masks, params, is_leaf=paths.is_none)


def _prune_lowest(scores: jax.Array, count: jax.Array) -> jax.Array:
    """Mask that prunes exactly ``count`` lowest scores of one array (ties: earlier first)."""
    return selection.select_global([scores], count)[0]


@runtime_checkable
class MaskRule(Protocol):
    """What ``sparse_training`` drives: a rule deciding the masks from the step.

    Attributes:
      straight_through: dense weights live behind the masks and get dense gradients.
      needs_key: the rule draws random masks, so ``sparse_training`` needs a PRNG key.
    """

    straight_through: bool
    needs_key: bool

    def init_masks(self, params: PyTree, key: jax.Array) -> PyTree:
        """The masks before the first step."""

    def is_update_step(self, step: jax.Array) -> jax.Array:
        """Whether the masks change at ``step`` (a traced boolean)."""

    def update_masks(self, masks: PyTree, params: PyTree, grads: PyTree, step: jax.Array,
                     key: jax.Array) -> PyTree:
        """The masks after ``step``."""


@dataclasses.dataclass(frozen=True)
class GradualMagnitude:
    """Gradual magnitude pruning on the cubic schedule of Zhu & Gupta.

    Every ``update_every`` steps from ``begin`` to ``end`` the lowest-magnitude weights are
    pruned until the leaf reaches the schedule's sparsity (scaled by its allocation share);
    pruned weights stay pruned. With ``straight_through=True`` the transformation keeps dense
    weights behind the masks and feeds them the dense gradients (a straight-through
    estimator): masks are then recomputed from all dense magnitudes, so pruned weights can
    return.

    Attributes:
      final_sparsity: sparsity from ``end`` on, in [0, 1).
      begin: first update step, >= 0.
      end: last update step, > ``begin``.
      update_every: steps between mask updates, >= 1.
      initial_sparsity: sparsity at ``begin``, in [0, ``final_sparsity``].
      power: the schedule's exponent (3 in the paper).
      allocation: ``"uniform"`` or ``"erk"``, how the sparsity is spread over the leaves.
      pattern: ``"unstructured"`` (per tensor), ``"per_output"`` or ``"global"``.
      straight_through: dense gradients reach pruned weights (see above).
      include: predicate ``(path, leaf) -> bool`` choosing the pruned leaves.

    References:
      Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of pruning for
      model compression"; Bengio et al. 2013 for the straight-through estimator.
    """

    final_sparsity: float
    begin: int
    end: int
    update_every: int
    initial_sparsity: float = 0.0
    power: float = 3.0
    allocation: str = "uniform"
    pattern: str = "unstructured"
    straight_through: bool = False
    needs_key = False
    include: Callable[[str, Any], bool] = allocation_lib.default_prunable

    def __post_init__(self):
        _checks.check_fraction("final_sparsity", self.final_sparsity, allow_traced=False)
        _checks.check_fraction("initial_sparsity", self.initial_sparsity, allow_traced=False)
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"initial_sparsity ({self.initial_sparsity}) must not exceed "
                             f"final_sparsity ({self.final_sparsity})")
        begin = _checks.check_int("begin", self.begin, minimum=0)
        end = _checks.check_int("end", self.end, minimum=0)
        if end <= begin:
            raise ValueError(f"the schedule's end must come after its begin, got begin={begin}, "
                             f"end={end}")
        _checks.check_int("update_every", self.update_every, minimum=1)
        _check_allocation(self.allocation)
        if parse_pattern(self.pattern).is_n_of_m:
            raise ValueError(f"pattern {self.pattern!r}: an N:M pattern has one fixed sparsity; "
                             "gradual pruning needs 'unstructured', 'per_output' or 'global'")

    @property
    def schedule(self) -> schedules.Schedule:
        """The sparsity as a function of the step (constant between updates)."""
        return schedules.polynomial_schedule(
            self.initial_sparsity, self.final_sparsity, self.begin, self.end,
            frequency=self.update_every, power=self.power)

    def init_masks(self, params: PyTree, key: jax.Array) -> PyTree:
        del key
        return _dense_masks(params, self._targets(params))

    def _targets(self, params):
        return _targets(params, self.final_sparsity, self.allocation, self.include)

    def is_update_step(self, step: jax.Array) -> jax.Array:
        offset = step - self.begin
        on_grid = (offset >= 0) & (offset % self.update_every == 0) & (step <= self.end)
        return on_grid | (step == self.end)

    def update_masks(self, masks, params, grads, step, key) -> PyTree:
        del grads, key
        level = self.schedule(step)
        final = self.final_sparsity
        # A leaf's share of the schedule: its allocated target over the overall target.
        sparsity = jax.tree.map(
            lambda t: None if t is None else level * (t / final if final else 0.0),
            self._targets(params), is_leaf=paths.is_none)
        if self.straight_through:
            scores = jax.tree.map(lambda m, w: None if m is None else jnp.abs(w), masks, params,
                                  is_leaf=paths.is_none)
        else:
            scores = _masked_magnitude(masks, params)
        return selection.select_masks(scores, sparsity, self.pattern)


@dataclasses.dataclass(frozen=True)
class Snip:
    """SNIP-style pruning at initialisation: one mask from the saliency ``|w * dL/dw|``.

    The saliency is taken from the gradient of step ``step`` (the first batch by default);
    the masks are fixed afterwards.

    Attributes:
      sparsity: fraction in [0, 1) (``1 - N/M`` with an N:M pattern).
      step: the step whose gradient decides, >= 0.
      allocation: ``"uniform"`` or ``"erk"``.
      pattern: any selection pattern, N:M included.
      include: predicate ``(path, leaf) -> bool`` choosing the pruned leaves.

    References:
      Lee, Ajanthan & Torr 2019, "SNIP: single-shot network pruning based on connection
      sensitivity" (the saliency ``|g * w|``, normalised away by the ranking).
    """

    sparsity: float
    step: int = 0
    allocation: str = "uniform"
    pattern: str = "unstructured"
    include: Callable[[str, Any], bool] = allocation_lib.default_prunable
    straight_through = False
    needs_key = False

    def __post_init__(self):
        _checks.check_fraction("sparsity", self.sparsity, allow_traced=False)
        _checks.check_int("step", self.step, minimum=0)
        _check_allocation(self.allocation)
        pattern = parse_pattern(self.pattern)
        if pattern.is_n_of_m and not math.isclose(self.sparsity, pattern.sparsity):
            raise ValueError(f"pattern {self.pattern} means sparsity {pattern.sparsity}, got "
                             f"sparsity={self.sparsity}")

    def init_masks(self, params, key):
        del key
        return _dense_masks(params, _targets(params, self.sparsity, self.allocation,
                                             self.include))

    def is_update_step(self, step):
        return step == self.step

    def update_masks(self, masks, params, grads, step, key):
        del step, key
        scores = jax.tree.map(
            lambda m, w, g: None if m is None else jnp.abs(w.astype(jnp.float32) * g),
            masks, params, grads, is_leaf=paths.is_none)
        targets = _targets(params, self.sparsity, self.allocation, self.include)
        return selection.select_masks(scores, targets, self.pattern)


@dataclasses.dataclass(frozen=True)
class _DropAndGrow:
    """Shared part of SET and RigL: fixed sparsity, connections move every few steps.

    Masks start random at the target sparsity. At each update step (``update_every``,
    ``2 * update_every``, ... before ``end``) every pruned leaf drops the
    ``floor(f * active)`` lowest-magnitude kept weights, ``f`` the drop fraction at that step,
    and grows as many among the weights not kept after the drop, so each leaf's sparsity never
    changes. Grown weights start at zero and their optimizer moments are reset (by the
    transformation). Subclasses say where to grow with ``grow_scores(params, grads, key)``,
    a score tree in which higher is grown first.

    Attributes:
      sparsity: fraction in [0, 1).
      update_every: steps between updates, >= 1.
      end: no update from this step on, > ``update_every``.
      drop_fraction: fraction of the kept weights moved at the first update, in (0, 1].
      drop_schedule: ``"cosine"`` (decays to 0 at ``end``) or ``"constant"``.
      allocation: ``"uniform"`` or ``"erk"``.
      include: predicate ``(path, leaf) -> bool`` choosing the pruned leaves.
    """

    sparsity: float
    update_every: int
    end: int
    drop_fraction: float = 0.3
    drop_schedule: str = "cosine"
    allocation: str = "uniform"
    include: Callable[[str, Any], bool] = allocation_lib.default_prunable
    straight_through = False
    needs_key = True

    def __post_init__(self):
        _checks.check_fraction("sparsity", self.sparsity, allow_traced=False)
        every = _checks.check_int("update_every", self.update_every, minimum=1)
        end = _checks.check_int("end", self.end, minimum=0)
        if end <= every:
            raise ValueError(f"end must come after the first update (update_every={every}), "
                             f"got end={end}")
        f = self.drop_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ValueError(f"drop_fraction must be in (0, 1], got {f!r}")
        if self.drop_schedule not in ("cosine", "constant"):
            raise ValueError(f"drop_schedule must be 'cosine' or 'constant', got "
                             f"{self.drop_schedule!r}")
        _check_allocation(self.allocation)

    def _targets(self, params):
        return _targets(params, self.sparsity, self.allocation, self.include)

    def init_masks(self, params, key):
        from jaxprune.criteria import random_criterion

        targets = self._targets(params)
        scores = jax.tree.map(lambda t, s: None if t is None else s, targets,
                              random_criterion(key)(params), is_leaf=paths.is_none)
        return selection.select_masks(scores, targets, "unstructured")

    def is_update_step(self, step):
        return (step > 0) & (step % self.update_every == 0) & (step < self.end)

    def drop_fraction_at(self, step) -> jax.Array:
        """The fraction of kept weights moved at ``step``."""
        if self.drop_schedule == "constant":
            return jnp.asarray(self.drop_fraction, jnp.float32)
        progress = jnp.asarray(step, jnp.float32) / self.end
        return (self.drop_fraction / 2 * (1 + jnp.cos(jnp.pi * progress))).astype(jnp.float32)

    def update_masks(self, masks, params, grads, step, key):
        fraction = self.drop_fraction_at(step)
        grow = self.grow_scores(params, grads, key)

        def move(mask, weight, grow_score):
            if mask is None:
                return None
            size = mask.size
            active = jnp.sum(mask, dtype=jnp.int32)
            moved = jnp.floor(fraction * active.astype(jnp.float32)).astype(jnp.int32)
            inactive = size - active
            drop_scores = jnp.where(mask, jnp.abs(weight.astype(jnp.float32)), -1.0)
            after_drop = _prune_lowest(drop_scores, inactive + moved)
            finite = jnp.nan_to_num(grow_score.astype(jnp.float32), nan=0.0,
                                    posinf=jnp.finfo(jnp.float32).max)
            grow_ranked = jnp.where(after_drop, jnp.inf, finite)
            return _prune_lowest(grow_ranked, inactive)

        return jax.tree.map(move, masks, params, grow, is_leaf=paths.is_none)


@dataclasses.dataclass(frozen=True)
class SET(_DropAndGrow):
    """Sparse Evolutionary Training: drop the smallest weights, grow at random.

    The paper moves a constant fraction (ζ = 0.3) each time; ``drop_schedule="constant"`` is
    the default here. See ``_DropAndGrow`` for the attributes.

    References:
      Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive
      sparse connectivity inspired by network science".
    """

    drop_schedule: str = "constant"

    def grow_scores(self, params, grads, key):
        del grads
        leaves, treedef = jax.tree.flatten(params)
        return jax.tree.unflatten(treedef, [
            jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(w), jnp.float32)
            for i, w in enumerate(leaves)])


@dataclasses.dataclass(frozen=True)
class RigL(_DropAndGrow):
    """Rigged Lottery: drop the smallest weights, grow where the dense gradient is largest.

    The drop fraction decays with a cosine to zero at ``end`` (``drop_schedule="cosine"``).
    See ``_DropAndGrow`` for the attributes.

    References:
      Evci et al. 2020, "Rigging the lottery: making all tickets winners".
    """

    def grow_scores(self, params, grads, key):
        del params, key
        return jax.tree.map(jnp.abs, grads)
