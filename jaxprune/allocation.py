"""Allocation: how a sparsity target is spread over the parameters of a model.

An allocation maps ``(params, target)`` to a sparsity tree: the structure of ``params`` with a
fraction for each leaf to prune and ``None`` for each leaf that stays dense. Only shapes and
paths are read, so allocations run inside ``jit`` too.

Which leaves are pruned is decided by ``include``, a predicate ``(path, leaf) -> bool``. The
default, ``default_prunable``, takes every array of rank >= 2 except embeddings and the LM head;
biases and norm scales are rank 1 and stay dense. ``overrides`` then sets chosen leaves by
regular expression (``re.search`` on the path, first match wins), to a fraction or to ``None``;
an override may also prune a leaf that ``include`` left out, such as the LM head.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp

from jaxprune import _checks, paths

PyTree = Any
Include = Callable[[str, Any], bool]

DENSE_BY_DEFAULT = re.compile(r"(?i)(embed|wte|wpe|lm_head|(^|/)head(/|$)|norm|bias)")


def default_prunable(path: str, leaf: Any) -> bool:
    """Whether a leaf is pruned by default: rank >= 2 and not an embedding, head, norm or bias.

    Args:
      path: the leaf's path string, such as ``"layers/3/mlp/up/kernel"``.
      leaf: the array (only its rank is read).

    Returns:
      True for weight matrices and other kernels of the network body.
    """
    return jnp.ndim(leaf) >= 2 and not DENSE_BY_DEFAULT.search(path)


def _compile_overrides(
    overrides: Mapping[str, float | None] | None, all_paths: list[str]
) -> list[tuple[re.Pattern, float | None]]:
    compiled = []
    for regex, value in (overrides or {}).items():
        try:
            pattern = re.compile(regex)
        except re.error as err:
            raise ValueError(
                f"overrides key {regex!r} is not a valid regular expression: {err}"
            ) from None
        if value is not None:
            _checks.check_fraction(f"overrides[{regex!r}]", value, allow_traced=False)
        if not any(pattern.search(p) for p in all_paths):
            shown = ", ".join(repr(p) for p in all_paths[:8])
            raise ValueError(
                f"overrides key {regex!r} matches no parameter path; paths look like {shown}"
            )
        compiled.append((pattern, value))
    return compiled


def _plan(
    params: PyTree, include: Include, overrides: Mapping[str, float | None] | None
) -> tuple[list[tuple[str, Any]], list[str], dict[str, float | None]]:
    """Lists leaves, the paths ``include`` takes, and the override value of each overridden path."""
    leaves = paths.leaves_with_paths(params)
    all_paths = [p for p, _ in leaves]
    if len(set(all_paths)) != len(all_paths):
        raise ValueError("params has two leaves with the same path string; allocation needs "
                         "unique paths")
    compiled = _compile_overrides(overrides, all_paths)
    overridden = {}
    for path, _ in leaves:
        for pattern, value in compiled:
            if pattern.search(path):
                overridden[path] = value
                break
    chosen = [p for p, leaf in leaves if p not in overridden and include(p, leaf)]
    return leaves, chosen, overridden


def _build_tree(params: PyTree, values: Mapping[str, float | None]) -> PyTree:
    return paths.map_with_path_str(lambda path, _: values.get(path), params)


def uniform(
    params: PyTree,
    sparsity: float,
    *,
    include: Include = default_prunable,
    overrides: Mapping[str, float | None] | None = None,
) -> PyTree:
    """Gives every prunable leaf the same sparsity.

    Args:
      params: the parameter tree.
      sparsity: fraction in [0, 1) for each leaf ``include`` takes.
      include: predicate ``(path, leaf) -> bool`` choosing the pruned leaves.
      overrides: ``{regex: fraction or None}`` applied on top; each regex must match a path.

    Returns:
      A sparsity tree with the structure of ``params``.

    Raises:
      TypeError, ValueError: for a sparsity outside [0, 1), an invalid regex or one that
        matches no path.
    """
    _checks.check_fraction("sparsity", sparsity)
    _, chosen, overridden = _plan(params, include, overrides)
    values: dict[str, float | None] = {p: sparsity for p in chosen}
    values.update(overridden)
    return _build_tree(params, values)


def erk(
    params: PyTree,
    sparsity: float,
    *,
    include: Include = default_prunable,
    overrides: Mapping[str, float | None] | None = None,
    power_scale: float = 1.0,
) -> PyTree:
    """Erdős–Rényi–Kernel allocation: small layers keep more of their weights.

    Each prunable leaf of shape ``(d_1, ..., d_k)`` gets density proportional to
    ``(sum_i d_i / prod_i d_i) ** power_scale``, scaled so that the prunable leaves together
    reach ``sparsity``. A leaf whose density would exceed 1 is left dense and the others are
    rescaled, repeatedly, as in the reference implementation. Overridden leaves keep their
    given value and are outside this budget.

    Args:
      params: the parameter tree.
      sparsity: target fraction in [0, 1) over the leaves ``include`` takes.
      include: predicate ``(path, leaf) -> bool`` choosing the pruned leaves.
      overrides: ``{regex: fraction or None}``, fixed values outside the ERK budget.
      power_scale: exponent on the ERK ratio; 0 gives uniform sparsity, 1 is ERK.

    Returns:
      A sparsity tree with the structure of ``params``. Leaves left dense by the rescaling get
      0.0 (not ``None``), so they still carry a mask.

    Raises:
      TypeError, ValueError: as ``uniform``, and for a negative ``power_scale``.

    References:
      Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners" (ERK); Mocanu et al.
      2018, "Scalable training of artificial neural networks with adaptive sparse connectivity
      inspired by network science" (Erdős–Rényi).
    """
    _checks.check_fraction("sparsity", sparsity, allow_traced=False)
    if not isinstance(power_scale, (int, float)) or power_scale < 0:
        raise ValueError(f"power_scale must be a number >= 0, got {power_scale!r}")
    leaves, chosen, overridden = _plan(params, include, overrides)
    shapes = {p: tuple(int(d) for d in jnp.shape(leaf)) for p, leaf in leaves if p in chosen}
    values: dict[str, float | None] = dict.fromkeys(chosen, 0.0)
    if sparsity > 0 and chosen:
        density = _erk_densities(shapes, 1.0 - float(sparsity), power_scale)
        values.update({p: 1.0 - d for p, d in density.items()})
    values.update(overridden)
    return _build_tree(params, values)


def _erk_densities(
    shapes: Mapping[str, tuple[int, ...]], target_density: float, power_scale: float
) -> dict[str, float]:
    sizes = {p: math.prod(s) for p, s in shapes.items()}
    raw = {p: (sum(s) / sizes[p]) ** power_scale for p, s in shapes.items()}
    dense: set[str] = set()
    while True:
        free = [p for p in shapes if p not in dense]
        if not free:
            break
        # Weights the non-dense leaves must keep once the dense ones keep all of theirs.
        budget = target_density * sum(sizes.values()) - sum(sizes[p] for p in dense)
        scale = budget / sum(raw[p] * sizes[p] for p in free)
        largest = max(raw[p] for p in free)
        if largest * scale <= 1.0:
            break
        dense.update(p for p in free if raw[p] == largest)
    return {p: 1.0 if p in dense else raw[p] * scale for p in shapes}
