"""Building blocks for the points of a sweep (configs/sweeps/): lists of field overrides.

A point is a dict from dotted config field (``"eval.max_windows"``) to value. A sweep is a
base config plus a list of points; these helpers write the usual lists in one line each.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Point = dict[str, Any]


def product(**axes: Sequence[Any]) -> list[Point]:
    """Every combination of the axes' values, the last axis varying fastest.

    Dots in field names are written as double underscores, since keyword names cannot hold
    dots: ``product(method=["wanda"], eval__max_windows=[16, 128])``.

    Args:
      **axes: field name -> values.

    Returns:
      One point per combination.

    Raises:
      ValueError: for an axis without values.
    """
    names = [name.replace("__", ".") for name in axes]
    for name, values in zip(names, axes.values(), strict=True):
        if isinstance(values, str) or not len(values):
            raise ValueError(f"sweep axis {name!r} needs a non-empty list of values, got "
                             f"{values!r}")
    combinations = itertools.product(*axes.values())
    return [dict(zip(names, combination, strict=True)) for combination in combinations]


def with_fields(points: Iterable[Mapping[str, Any]], **fields: Any) -> list[Point]:
    """``points`` with ``fields`` added to each (names as in ``product``)."""
    extra = {name.replace("__", "."): value for name, value in fields.items()}
    return [{**point, **extra} for point in points]


def chain(*groups: Iterable[Mapping[str, Any]]) -> list[Point]:
    """The points of several groups, one after the other."""
    return [dict(point) for group in groups for point in group]
