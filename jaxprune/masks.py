"""Mask trees: apply, combine, count, report, and check N:M validity.

A mask tree has the structure of the parameter tree it belongs to. Each leaf is either a boolean
array of the parameter's shape, ``True`` where the weight is kept and ``False`` where it is
pruned, or ``None``, meaning the parameter stays dense.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import paths
from jaxprune.patterns import Pattern, parse_pattern

PyTree = Any


def check_masks(params: PyTree, masks: PyTree) -> None:
    """Checks that ``masks`` fits ``params``: same structure, boolean leaves of the same shape.

    Args:
      params: the parameter tree.
      masks: a mask tree (``None`` leaves allowed).

    Raises:
      ValueError: if the structure or a leaf's shape differs, or a leaf is not boolean; the
        message names the path.
    """
    paths.check_same_structure(params, masks, reference_name="params", other_name="masks")
    for (path, param), (_, mask) in zip(
        paths.leaves_with_paths(params), paths.leaves_with_paths(masks, keep_none=True),
        strict=True,
    ):
        if mask is None:
            continue
        if jnp.shape(mask) != jnp.shape(param):
            raise ValueError(
                f"mask at {path!r} has shape {jnp.shape(mask)}, the parameter has "
                f"{jnp.shape(param)}"
            )
        if jnp.result_type(mask) != jnp.bool_:
            raise ValueError(f"mask at {path!r} must be boolean, got dtype {jnp.result_type(mask)}")


def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
    """Zeroes the pruned weights.

    Args:
      params: the parameter tree.
      masks: a mask tree of the same structure (``True`` keeps, ``None`` leaves dense).

    Returns:
      A tree like ``params`` with pruned entries set to zero, dtypes preserved.

    Raises:
      ValueError: if ``masks`` does not fit ``params`` (see ``check_masks``).
    """
    check_masks(params, masks)
    return jax.tree.map(
        lambda w, m: w if m is None else jnp.where(m, w, jnp.zeros((), w.dtype)),
        params, masks, is_leaf=paths.is_none,
    )


def combine_masks(first: PyTree, second: PyTree, *, mode: str = "and") -> PyTree:
    """Combines two mask trees leaf by leaf.

    ``None`` stands for an all-``True`` mask, so ``"and"`` with ``None`` returns the other mask
    and ``"or"`` with ``None`` returns ``None``.

    Args:
      first: a mask tree.
      second: a mask tree of the same structure.
      mode: ``"and"`` keeps a weight kept by both (the union of the pruned sets), ``"or"``
        keeps a weight kept by either.

    Returns:
      The combined mask tree.

    Raises:
      ValueError: for an unknown ``mode`` or trees of different structure.
    """
    if mode not in ("and", "or"):
        raise ValueError(f"mode must be 'and' or 'or', got {mode!r}")
    paths.check_same_structure(first, second, reference_name="first", other_name="second")

    def combine(a, b):
        if a is None or b is None:
            if mode == "or":
                return None
            return b if a is None else a
        return jnp.logical_and(a, b) if mode == "and" else jnp.logical_or(a, b)

    return jax.tree.map(combine, first, second, is_leaf=paths.is_none)


def count_kept(masks: PyTree) -> tuple[jax.Array, int]:
    """Counts kept entries over the non-``None`` leaves of a mask tree; works under ``jit``.

    Args:
      masks: a mask tree.

    Returns:
      ``(kept, total)``: the number of ``True`` entries (an int32 array) and the number of
      entries (a Python int) over the leaves that carry a mask.
    """
    leaves = [m for m in jax.tree.leaves(masks) if m is not None]
    total = sum(int(np.prod(jnp.shape(m))) for m in leaves)
    kept = sum((jnp.sum(m, dtype=jnp.int32) for m in leaves), jnp.zeros((), jnp.int32))
    return kept, total


def sparsity(masks: PyTree) -> float:
    """The fraction of entries pruned over the leaves that carry a mask: the one definition of
    "sparsity reached" that the solvers, jobs and reports use.

    Counts are exact (``count_kept``), so the value does not depend on float rounding. It
    reads mask values, so call it outside ``jit``; inside, use ``count_kept``.

    Args:
      masks: a mask tree (``None`` leaves ignored), or one mask array.

    Returns:
      ``1 - kept / total``, or 0.0 for a tree without masks.
    """
    kept, total = count_kept(masks)
    return 1.0 - int(kept) / total if total else 0.0


class LeafSparsity(NamedTuple):
    """One row of a sparsity report."""

    path: str
    shape: tuple[int, ...]
    kept: int
    total: int
    masked: bool

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.total if self.total else 0.0


class SparsityReport(NamedTuple):
    """Per-parameter and total sparsity of a masked tree.

    Attributes:
      rows: one ``LeafSparsity`` per parameter, in tree order; ``masked`` is false for a
        parameter whose mask is ``None`` (it counts as fully kept).
    """

    rows: list[LeafSparsity]

    @property
    def kept(self) -> int:
        return sum(row.kept for row in self.rows)

    @property
    def total(self) -> int:
        return sum(row.total for row in self.rows)

    @property
    def sparsity(self) -> float:
        """Sparsity over every parameter, dense ones included."""
        return 1.0 - self.kept / self.total if self.total else 0.0

    @property
    def masked_sparsity(self) -> float:
        """Sparsity over the parameters that carry a mask."""
        masked = [row for row in self.rows if row.masked]
        total = sum(row.total for row in masked)
        return 1.0 - sum(row.kept for row in masked) / total if total else 0.0

    def to_markdown(self, *, only_masked: bool = False) -> str:
        """Renders the report as a markdown table with a total row."""
        lines = ["| path | shape | kept | total | sparsity |", "| --- | --- | ---: | ---: | ---: |"]
        for row in self.rows:
            if only_masked and not row.masked:
                continue
            shape = "x".join(str(d) for d in row.shape) or "scalar"
            tag = "" if row.masked else " (dense)"
            lines.append(
                f"| {row.path}{tag} | {shape} | {row.kept} | {row.total} | {row.sparsity:.4f} |"
            )
        lines.append(f"| **total** | | {self.kept} | {self.total} | {self.sparsity:.4f} |")
        return "\n".join(lines)


def sparsity_report(params: PyTree, masks: PyTree) -> SparsityReport:
    """Reports path, shape, kept count and sparsity of every parameter, and the totals.

    Runs on the host (it reads mask values); call it outside ``jit``.

    Args:
      params: the parameter tree.
      masks: its mask tree.

    Returns:
      A ``SparsityReport``.

    Raises:
      ValueError: if ``masks`` does not fit ``params``.
    """
    check_masks(params, masks)
    rows = []
    for (path, param), (_, mask) in zip(
        paths.leaves_with_paths(params), paths.leaves_with_paths(masks, keep_none=True),
        strict=True,
    ):
        shape = tuple(int(d) for d in jnp.shape(param))
        total = math.prod(shape)
        kept = total if mask is None else int(np.count_nonzero(np.asarray(mask)))
        rows.append(LeafSparsity(path, shape, kept, total, mask is not None))
    return SparsityReport(rows)


def is_n_of_m(mask: jax.Array, n: int, m: int, *, axis: int = 0) -> jax.Array:
    """Whether every group of ``m`` consecutive entries along ``axis`` keeps at most ``n``.

    Args:
      mask: a boolean array whose size along ``axis`` is divisible by ``m``.
      n: most entries kept per group.
      m: group size.
      axis: the axis the groups run along (the input axis of a kernel, 0 by default).

    Returns:
      A boolean scalar array; works under ``jit``.

    Raises:
      ValueError: if the size along ``axis`` is not divisible by ``m``.
    """
    mask = jnp.moveaxis(jnp.asarray(mask), axis, 0)
    if mask.shape[0] % m:
        raise ValueError(
            f"axis {axis} of the mask has size {mask.shape[0]}, which is not divisible by M={m}"
        )
    grouped = mask.reshape((mask.shape[0] // m, m) + mask.shape[1:])
    return jnp.all(jnp.sum(grouped, axis=1) <= n)


def check_n_of_m_masks(masks: PyTree, pattern: str | Pattern) -> None:
    """Raises unless every non-``None`` mask in the tree has the given N:M pattern.

    Args:
      masks: a mask tree.
      pattern: an N:M pattern such as ``"2:4"``.

    Raises:
      ValueError: naming the first mask that breaks the pattern or cannot carry it.
    """
    pattern = parse_pattern(pattern)
    if not pattern.is_n_of_m:
        raise ValueError(f"pattern must be N:M, got {str(pattern)!r}")
    for path, mask in paths.leaves_with_paths(masks, keep_none=True):
        if mask is None:
            continue
        try:
            valid = bool(is_n_of_m(mask, pattern.n, pattern.m))
        except ValueError as err:
            raise ValueError(f"mask at {path!r}: {err}") from None
        if not valid:
            raise ValueError(
                f"mask at {path!r} keeps more than {pattern.n} of some group of {pattern.m} "
                "along axis 0"
            )
