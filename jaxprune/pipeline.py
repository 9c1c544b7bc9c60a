"""``prune``: allocation, criterion and selection composed into one call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jaxprune import allocation, paths, selection
from jaxprune.criteria import Criterion, magnitude
from jaxprune.patterns import Pattern, parse_pattern

PyTree = Any

_ALLOCATIONS: dict[str, Callable[..., PyTree]] = {
    "uniform": allocation.uniform,
    "erk": allocation.erk,
}


def prune(
    params: PyTree,
    criterion: Criterion = magnitude,
    sparsity: float | PyTree | None = None,
    *,
    pattern: str | Pattern = "unstructured",
    stats: PyTree = None,
    allocate: str = "uniform",
    include: allocation.Include = allocation.default_prunable,
    overrides: Mapping[str, float | None] | None = None,
) -> PyTree:
    """Computes pruning masks for a parameter tree.

    Checks every argument, allocates the sparsity over the leaves (unless a sparsity tree is
    given), scores the weights with ``criterion`` and selects the masks. Works under ``jit``.

    Example::

      masks = jaxprune.prune(params, jaxprune.magnitude, 0.5, pattern="per_output")
      sparse_params = jaxprune.apply_masks(params, masks)

    Args:
      params: the parameter tree (a dict, an ``nnx.State``, any pytree of arrays).
      criterion: ``(params, stats) -> scores``; higher scores are kept.
      sparsity: a fraction in [0, 1) to allocate, or a ready sparsity tree (see
        ``jaxprune.allocation``). For an N:M pattern it may be omitted (``1 - N/M`` is used)
        and, if given, must equal ``1 - N/M``.
      pattern: ``"unstructured"``, ``"per_output"``, ``"global"`` or ``"N:M"``.
      stats: statistics passed to ``criterion`` (``None`` for magnitude or random).
      allocate: ``"uniform"`` or ``"erk"``; used when ``sparsity`` is a fraction.
      include: predicate ``(path, leaf) -> bool`` choosing the pruned leaves; the default
        leaves embeddings, the LM head, norms and biases dense.
      overrides: ``{regex: fraction or None}`` per-path sparsities on top of the allocation.

    Returns:
      A mask tree: ``True`` where kept, ``None`` for dense leaves.

    Raises:
      TypeError, ValueError: for any bad argument, before scores are computed.
    """
    pattern = parse_pattern(pattern)
    if allocate not in _ALLOCATIONS:
        raise ValueError(f"allocate must be one of {sorted(_ALLOCATIONS)}, got {allocate!r}")
    if sparsity is None:
        if not pattern.is_n_of_m:
            raise ValueError(f"sparsity is required for pattern {str(pattern)!r}")
        sparsity = pattern.sparsity
    if _is_fraction(sparsity):
        if pattern.is_n_of_m and allocate != "uniform":
            raise ValueError(f"pattern {pattern} prunes every leaf alike; allocate must be "
                             f"'uniform', got {allocate!r}")
        sparsity = _ALLOCATIONS[allocate](params, sparsity, include=include, overrides=overrides)
    else:
        if overrides:
            raise ValueError("overrides apply when sparsity is a fraction; a sparsity tree "
                             "already fixes every leaf")
        paths.check_same_structure(params, sparsity, reference_name="params",
                                   other_name="sparsity")
    # Shapes are all that matter here, so params stand in for scores: errors come before work.
    selection.check_selection_inputs(params, sparsity, pattern, check_values=False)
    scores = criterion(params, stats)
    paths.check_same_structure(params, scores, reference_name="params",
                               other_name="criterion scores")
    return selection.select_masks(scores, sparsity, pattern)


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) or (hasattr(value, "ndim") and value.ndim == 0)
