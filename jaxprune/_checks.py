"""Argument checks shared by the core modules; each error names the argument and what is allowed."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values that can be read now (not a tracer inside ``jit``)."""
    return not isinstance(x, jax.core.Tracer)


def check_fraction(name: str, value: Any, *, allow_traced: bool = True) -> None:
    """Checks that ``value`` is a fraction in [0, 1), as sparsities are.

    Args:
      name: how the caller calls the argument, used in the error message.
      value: a Python or NumPy real number, or (when ``allow_traced``) a traced JAX scalar,
        which cannot be checked and is accepted.
      allow_traced: whether a JAX scalar is accepted.

    Raises:
      TypeError: if ``value`` is not a real number (booleans are refused).
      ValueError: if ``value`` is NaN or outside [0, 1).
    """
    if isinstance(value, jax.Array) and value.ndim == 0 and allow_traced:
        if not is_concrete(value):
            return
        value = value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1), got {value!r}")
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (1 would remove everything), got {value!r}")


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Checks that ``value`` is an integer no smaller than ``minimum`` and returns it.

    Raises:
      TypeError: if ``value`` is not an integer.
      ValueError: if ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
