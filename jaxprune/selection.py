"""Selection: turn scores into masks under a sparsity target and a pattern.

``select_masks(scores, sparsity, pattern)`` keeps the highest-scoring entries of each comparison
group (see ``jaxprune.patterns``). The rules, identical under ``jit`` and eagerly:

* Counting. A group of ``n`` entries at sparsity ``s`` prunes ``floor(s * n + 1e-6)`` entries,
  the ``int(s * n)`` of the reference implementations, with a tolerance so that, say, 0.29 of
  100 prunes 29 despite ``0.29 * 100 == 28.999999999999996``. Per output unit every unit prunes
  the same count. N:M prunes exactly ``M - N`` of every group. Global selection prunes
  ``floor(sum_l s_l * n_l + 1e-6)`` entries over all masked leaves. A traced (non-static)
  sparsity is rounded in float32, with an extra tolerance of ``n * 2**-21`` that absorbs the
  float32 error of the product; the count then equals the static count for sparsities that are
  float32 images of the same value and for groups up to millions of entries, unless ``s * n``
  falls within that tolerance just below an integer.
* Ties. Among equal scores, the entry that comes first (lower flat index in the group; for
  global selection, earlier leaf in flattening order, then lower flat index) is pruned first.
  ``-0.0`` and ``0.0`` are equal.
* NaN. A concrete score tree with NaN in a masked leaf is refused before any work. Inside
  ``jit`` values cannot be checked; NaN then ranks above every number (it is kept).

No selection sorts: each group's exact pruning threshold is found by bisection over the 2**32
float32 bit patterns (32 counting passes over the scores; 64 for float64), then ties at the
threshold are broken by position. This is several times faster than sorting on CPU, keeps
memory linear in the largest leaf for global selection, and gives exactly the masks of a
stable sort. N:M groups are ranked by direct comparison of their M entries.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxprune import _checks, paths
from jaxprune.patterns import GLOBAL, PER_OUTPUT, PER_TENSOR, Pattern, parse_pattern

PyTree = Any
Sparsity = float | jax.Array | None

_STATIC_TOLERANCE = 1e-6


def num_pruned(sparsity: Sparsity, group_size: int) -> int | jax.Array:
    """How many entries of a group of ``group_size`` a sparsity prunes (module docstring rule).

    Args:
      sparsity: a fraction in [0, 1), static (Python or NumPy) or a traced JAX scalar.
      group_size: number of entries in the comparison group.

    Returns:
      A Python int for a static sparsity, an int32 scalar array for a traced one.
    """
    if _is_static(sparsity):
        return _floor_count(float(sparsity) * group_size, group_size)
    return _floor_count(jnp.asarray(sparsity, jnp.float32) * group_size, group_size)


def _floor_count(wanted: float | jax.Array, size: int) -> int | jax.Array:
    """``floor(wanted)`` within [0, size], with the rounding tolerances of the module docstring.

    A Python float (exact float64 arithmetic) gets the static tolerance; a traced float32 value
    also gets ``size * 2**-21`` for the float32 error of the product.
    """
    if isinstance(wanted, float):
        return min(size, math.floor(wanted + _STATIC_TOLERANCE))
    tolerance = _STATIC_TOLERANCE + size * 2.0**-21
    return jnp.clip(jnp.floor(wanted + tolerance), 0, size).astype(jnp.int32)


def _is_static(sparsity: Sparsity) -> bool:
    return not isinstance(sparsity, jax.Array) or _checks.is_concrete(sparsity)


def _canonical_scores(scores: jax.Array) -> jax.Array:
    """Float32 (or float64) scores with -0.0 folded into 0.0, so the two tie."""
    scores = jnp.asarray(scores)
    if scores.dtype != jnp.float64:
        scores = scores.astype(jnp.float32)
    return jnp.where(scores == 0, jnp.zeros((), scores.dtype), scores)


def _sortable_bits(scores: jax.Array) -> jax.Array:
    """Maps float32 (float64) to uint32 (uint64) keys whose unsigned order is the float order.

    -0.0 becomes 0.0 and every NaN the positive quiet NaN, which orders above +inf.
    """
    scores = _canonical_scores(scores)
    scores = jnp.where(jnp.isnan(scores), jnp.asarray(jnp.nan, scores.dtype), scores)
    unsigned = jnp.uint64 if scores.dtype == jnp.float64 else jnp.uint32
    bits = lax.bitcast_convert_type(scores, unsigned)
    width = jnp.iinfo(unsigned).bits
    sign = jnp.asarray(1, unsigned) << (width - 1)
    return jnp.where((bits & sign) != 0, ~bits, bits | sign)


@jax.jit  # eager callers get one compiled program per shape instead of op-by-op dispatch
def _keep_along_axis0(scores: jax.Array, prune_count: int | jax.Array) -> jax.Array:
    """Prunes the ``prune_count`` lowest entries of every column (groups run along axis 0).

    Finds each column's threshold by bisection over the keys' bit range (32 or 64 counting
    passes, no sort), prunes everything below it and then the first entries equal to it, which
    is exactly what a stable ascending sort would prune.
    """
    keys = _sortable_bits(scores)
    unsigned = keys.dtype
    target = jnp.asarray(prune_count, unsigned)
    columns = keys.shape[1]

    def bisect(_, bounds):
        low, high = bounds
        mid = low + (high - low) // 2
        enough = jnp.sum(keys <= mid[None, :], axis=0, dtype=unsigned) >= target
        return jnp.where(enough, low, mid + 1), jnp.where(enough, mid, high)

    start = (jnp.zeros(columns, unsigned), jnp.full(columns, jnp.iinfo(unsigned).max, unsigned))
    threshold, _ = lax.fori_loop(0, jnp.iinfo(unsigned).bits, bisect, start)
    below = keys < threshold[None, :]
    remaining = target - jnp.sum(below, axis=0, dtype=unsigned)
    at_threshold = keys == threshold[None, :]
    first_ties = at_threshold & (jnp.cumsum(at_threshold, axis=0, dtype=unsigned)
                                 <= remaining[None, :])
    return ~(below | first_ties)


def ranks_in_small_groups(scores: jax.Array) -> jax.Array:
    """Rank of each entry within its column (axis 0), ties broken by position; no sort.

    For the few entries of an N:M group, counting the entries that rank below each one
    (``O(M^2)`` comparisons) is far faster on CPU than sorting millions of tiny columns, and
    gives the same ranks as a stable sort.
    """
    size = scores.shape[0]
    below = scores[None, :] < scores[:, None]  # [i, j]: entry j ranks below entry i
    earlier_tie = (scores[None, :] == scores[:, None]) & (
        jnp.arange(size)[None, :] < jnp.arange(size)[:, None]
    ).reshape((size, size) + (1,) * (scores.ndim - 1))
    return jnp.sum(below | earlier_tie, axis=1)


def select_per_tensor(scores: jax.Array, sparsity: Sparsity) -> jax.Array:
    """Keeps the highest scores of a whole tensor.

    Args:
      scores: scores of one parameter.
      sparsity: fraction to prune, in [0, 1).

    Returns:
      A boolean mask of ``scores.shape``, ``True`` where kept.
    """
    flat = _canonical_scores(scores).reshape(-1, 1)
    keep = _keep_along_axis0(flat, num_pruned(sparsity, flat.shape[0]))
    return keep.reshape(jnp.shape(scores))


def select_per_output(scores: jax.Array, sparsity: Sparsity) -> jax.Array:
    """Keeps the highest scores feeding each output unit (each index of the last axis).

    For an ``[in, out]`` kernel this compares the entries of one column, Wanda's group.

    Args:
      scores: scores of one parameter, rank >= 2.
      sparsity: fraction of each output unit's entries to prune, in [0, 1).

    Returns:
      A boolean mask of ``scores.shape``, ``True`` where kept.
    """
    shape = jnp.shape(scores)
    columns = _canonical_scores(scores).reshape(-1, shape[-1])
    keep = _keep_along_axis0(columns, num_pruned(sparsity, columns.shape[0]))
    return keep.reshape(shape)


def select_n_of_m(scores: jax.Array, n: int, m: int) -> jax.Array:
    """Keeps the ``n`` highest of every ``m`` consecutive scores along axis 0 (the input axis).

    Args:
      scores: scores of one parameter whose axis 0 is divisible by ``m``.
      n: entries kept per group.
      m: group size.

    Returns:
      A boolean mask of ``scores.shape``, ``True`` where kept.
    """
    shape = jnp.shape(scores)
    groups = _canonical_scores(scores).reshape(shape[0] // m, m, -1)
    by_position = jnp.swapaxes(groups, 0, 1).reshape(m, -1)
    keep = ranks_in_small_groups(by_position) >= m - n
    return jnp.swapaxes(keep.reshape(m, shape[0] // m, -1), 0, 1).reshape(shape)


@jax.jit
def select_global(scores: list[jax.Array], prune_count: int | jax.Array) -> list[jax.Array]:
    """Prunes the ``prune_count`` lowest scores across several tensors, without a global sort.

    Args:
      scores: one score array per tensor, in the order that breaks ties.
      prune_count: total number of entries to prune (at most the total size); static or traced.

    Returns:
      One boolean mask per tensor, ``True`` where kept.
    """
    keys = [_sortable_bits(jnp.asarray(s).astype(jnp.float32)).ravel() for s in scores]
    target = jnp.asarray(prune_count, jnp.uint32)

    def count_at_most(threshold):
        return sum(jnp.sum(k <= threshold, dtype=jnp.uint32) for k in keys)

    def bisect(_, bounds):
        low, high = bounds
        mid = low + (high - low) // 2
        enough = count_at_most(mid) >= target
        return jnp.where(enough, low, mid + 1), jnp.where(enough, mid, high)

    # After 32 halvings of the uint32 range, low is the smallest key with at least `target`
    # keys at or below it: the key of the last pruned entry.
    threshold, _ = lax.fori_loop(
        0, 32, bisect, (jnp.uint32(0), jnp.uint32(0xFFFFFFFF))
    )
    below = [k < threshold for k in keys]
    remaining = target - sum(jnp.sum(b, dtype=jnp.uint32) for b in below)
    masks = []
    for key, is_below, score in zip(keys, below, scores, strict=True):
        at_threshold = key == threshold
        take = jnp.minimum(remaining, jnp.sum(at_threshold, dtype=jnp.uint32))
        first_ties = at_threshold & (jnp.cumsum(at_threshold, dtype=jnp.uint32) <= take)
        remaining = remaining - take
        masks.append(~(is_below | first_ties).reshape(jnp.shape(score)))
    return masks


def _sparsity_tree(scores: PyTree, sparsity: Any) -> PyTree:
    """Broadcasts a scalar sparsity over ``scores``; checks a tree's structure."""
    if sparsity is None or isinstance(sparsity, (int, float)) or (
        hasattr(sparsity, "ndim") and jnp.ndim(sparsity) == 0
    ):
        return jax.tree.map(lambda _: sparsity, scores, is_leaf=paths.is_none)
    paths.check_same_structure(scores, sparsity, reference_name="scores", other_name="sparsity")
    return sparsity


def _has_nan(scores: jax.Array) -> bool:
    return bool(jnp.any(jnp.isnan(jnp.asarray(scores))))


def check_selection_inputs(
    scores: PyTree, sparsity: PyTree, pattern: Pattern, *, check_values: bool = True
) -> None:
    """Validates a selection before any work.

    Args:
      scores: score tree, or the parameter tree when ``check_values`` is false (then only
        shapes are read).
      sparsity: a sparsity tree of the same structure with ``None`` for dense leaves.
      pattern: a parsed pattern.
      check_values: whether to look for NaN in concrete scores.

    Raises:
      TypeError, ValueError: naming the path and what is allowed, for a sparsity outside
        [0, 1), a sparsity that disagrees with an N:M pattern, a leaf of too low rank for
        ``per_output``, an N:M leaf that is not 2-D or whose input axis M does not divide,
        or NaN in concrete scores. A traced sparsity is checked when the compiled program
        runs (``_checks.check_traced_fraction``): out of range, the call fails there.
    """
    traced_checked = set()  # a traced sparsity shared by many leaves is checked once
    for (path, score), (_, s) in zip(
        paths.leaves_with_paths(scores, keep_none=True),
        paths.leaves_with_paths(sparsity, keep_none=True),
        strict=True,
    ):
        if s is None:
            continue
        if score is None:
            raise ValueError(
                f"scores at {path!r} are None (the criterion had nothing to score there), but "
                f"its sparsity is {s}; give the criterion statistics for it or leave it dense"
            )
        if _is_static(s) or id(s) not in traced_checked:
            _checks.check_fraction(f"sparsity at {path!r}", s)
            traced_checked.add(id(s))
        shape = jnp.shape(score)
        if pattern.is_n_of_m:
            if _is_static(s) and abs(float(s) - pattern.sparsity) > 1e-9:
                raise ValueError(
                    f"sparsity at {path!r} is {float(s)}, but pattern {pattern} implies "
                    f"{pattern.sparsity} (1 - N/M); pass sparsity={pattern.sparsity!r}, or "
                    f"None to take it from the pattern"
                )
            if len(shape) != 2:
                raise ValueError(
                    f"pattern {pattern} needs a 2-D kernel [in, out] (groups of M run along the "
                    f"input axis), but {path!r} has shape {shape}; reshape it to 2-D or leave "
                    f"it dense"
                )
            if shape[0] % pattern.m:
                raise ValueError(
                    f"pattern {pattern} needs axis 0 (the input axis) of {path!r} to be "
                    f"divisible by M={pattern.m}, but its shape is {shape}"
                )
        elif pattern.kind == PER_OUTPUT and len(shape) < 2:
            raise ValueError(
                f"pattern 'per_output' needs a kernel of rank >= 2 (output units on the last "
                f"axis), but {path!r} has shape {shape}; leave it dense or use 'unstructured'"
            )
        if check_values and _checks.is_concrete(score) and _has_nan(score):
            raise ValueError(f"scores at {path!r} contain NaN; a criterion must return numbers")


def select_masks(
    scores: PyTree, sparsity: Any, pattern: str | Pattern = "unstructured"
) -> PyTree:
    """Turns scores into masks: in each comparison group, the lowest scores are pruned.

    Args:
      scores: a tree of score arrays (higher means more important); ``None`` is allowed for a
        leaf whose sparsity is ``None``.
      sparsity: a fraction in [0, 1) for every leaf, or a tree of the structure of ``scores``
        holding a fraction or ``None`` (leaf stays dense) per leaf, as ``jaxprune.allocation``
        makes. With an N:M pattern each non-``None`` fraction must equal ``1 - N/M``.
      pattern: ``"unstructured"``, ``"per_output"``, ``"global"`` or ``"N:M"``; see
        ``jaxprune.patterns``.

    Returns:
      A mask tree: ``True`` where kept, ``None`` where the sparsity is ``None``.

    Raises:
      TypeError, ValueError: for bad input (see ``check_selection_inputs``), before any work.
    """
    pattern = parse_pattern(pattern)
    sparsity = _sparsity_tree(scores, sparsity)
    check_selection_inputs(scores, sparsity, pattern)

    if pattern.kind == GLOBAL:
        return _select_global_tree(scores, sparsity)

    def select_leaf(score, s):
        if s is None:
            return None
        if pattern.kind == PER_TENSOR:
            return select_per_tensor(score, s)
        if pattern.kind == PER_OUTPUT:
            return select_per_output(score, s)
        return select_n_of_m(score, pattern.n, pattern.m)

    return jax.tree.map(select_leaf, scores, sparsity, is_leaf=paths.is_none)


def _select_global_tree(scores: PyTree, sparsity: PyTree) -> PyTree:
    score_leaves, treedef = jax.tree.flatten(scores, is_leaf=paths.is_none)
    sparsity_leaves = jax.tree.leaves(sparsity, is_leaf=paths.is_none)
    pairs = enumerate(zip(score_leaves, sparsity_leaves, strict=True))
    chosen = [(i, score, s) for i, (score, s) in pairs if s is not None]
    masks: list[Any] = [None] * len(score_leaves)
    if not chosen:
        return jax.tree.unflatten(treedef, masks)
    sizes = [math.prod(jnp.shape(score)) for _, score, _ in chosen]
    if sum(sizes) >= 2**32:
        raise ValueError(f"global selection counts in uint32; {sum(sizes)} entries is too many")
    if all(_is_static(s) for _, _, s in chosen):
        wanted = math.fsum(float(s) * n for (_, _, s), n in zip(chosen, sizes, strict=True))
    else:
        wanted = sum(jnp.asarray(s, jnp.float32) * n
                     for (_, _, s), n in zip(chosen, sizes, strict=True))
    prune_count = _floor_count(wanted, sum(sizes))
    leaf_masks = select_global([score for _, score, _ in chosen], prune_count)
    for (i, _, _), mask in zip(chosen, leaf_masks, strict=True):
        masks[i] = mask
    return jax.tree.unflatten(treedef, masks)
