"""Readable paths for the leaves of a parameter tree, and structure checks between trees.

Every error message, report row and regex override in jaxprune names a leaf by one string such
as ``layers/0/mlp/up/kernel``. Flax NNX wraps each array in a variable whose flattening adds a
``.value`` attribute step; that step says nothing about where the weight lives, so it is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax

PyTree = Any


def _key_name(key: Any) -> str | None:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return None if key.name == "value" else key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_to_str(path: Iterable[Any]) -> str:
    """Joins the keys of a ``jax.tree_util`` key path with ``/``.

    Args:
      path: a key path, as returned by ``jax.tree_util.tree_flatten_with_path``.

    Returns:
      The path as a string, for example ``"layers/0/attn/q/kernel"``; ``""`` for a bare leaf.
    """
    names = (_key_name(key) for key in path)
    return "/".join(name for name in names if name is not None)


def is_none(x: Any) -> bool:
    """``is_leaf`` predicate that keeps ``None`` entries of mask and sparsity trees as leaves."""
    return x is None


def leaves_with_paths(tree: PyTree, *, keep_none: bool = False) -> list[tuple[str, Any]]:
    """Lists ``(path string, leaf)`` in flattening order.

    Args:
      tree: any pytree.
      keep_none: if true, ``None`` entries are listed as leaves (mask and sparsity trees use
        ``None`` for "stays dense").

    Returns:
      A list of ``(path, leaf)`` pairs.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none if keep_none else None)
    return [(path_to_str(path), leaf) for path, leaf in flat]


def map_with_path_str(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
    """Like ``jax.tree.map`` but passes the path string first; ``None`` in ``rest`` is a leaf.

    The structure comes from ``tree``; each tree in ``rest`` must match it, with ``None``
    allowed in place of any leaf.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, *leaves: fn(path_to_str(path), *leaves), tree, *rest, is_leaf=is_none
    )


def check_same_structure(
    reference: PyTree, other: PyTree, *, reference_name: str, other_name: str
) -> None:
    """Raises if ``other`` does not have the structure of ``reference``.

    ``None`` in ``other`` counts as a leaf, so a mask or sparsity tree may hold ``None`` where
    ``reference`` holds an array.

    Args:
      reference: the tree that defines the structure (usually the parameters).
      other: the tree to check (masks, scores, sparsities, statistics).
      reference_name: what ``reference`` is called in the error message.
      other_name: what ``other`` is called in the error message.

    Raises:
      ValueError: naming the paths present in one tree and missing from the other, or the two
        structures when the paths agree but the containers differ.
    """
    ref_def = jax.tree.structure(reference, is_leaf=is_none)
    other_def = jax.tree.structure(other, is_leaf=is_none)
    if ref_def == other_def:
        return
    ref_paths = [path for path, _ in leaves_with_paths(reference, keep_none=True)]
    other_paths = [path for path, _ in leaves_with_paths(other, keep_none=True)]
    missing = [p for p in ref_paths if p not in set(other_paths)]
    extra = [p for p in other_paths if p not in set(ref_paths)]
    details = []
    if missing:
        details.append(f"missing from {other_name}: {_preview(missing)}")
    if extra:
        details.append(f"not in {reference_name}: {_preview(extra)}")
    if not details:
        details.append(f"{reference_name} is {ref_def}, {other_name} is {other_def}")
    raise ValueError(
        f"{other_name} must have the same tree structure as {reference_name}; "
        + "; ".join(details)
    )


def _preview(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(item) for item in items[:limit])
    more = len(items) - limit
    return shown + (f" and {more} more" if more > 0 else "")
