"""Argument checks shared by the core modules; each error names the argument and what is allowed."""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values that can be read now (not a tracer inside ``jit``)."""
    return not isinstance(x, jax.core.Tracer)


def _fraction_error(name: str, value: Any) -> str:
    return f"{name} must be in [0, 1) (1 would remove everything), got {value!r}"


def _raise_unless_fractions(name: str, value: np.ndarray) -> None:
    value = np.asarray(value)
    bad = value[~((value >= 0) & (value < 1))]  # NaN fails both comparisons
    if bad.size:
        raise ValueError(_fraction_error(name, bad.reshape(-1)[0].item()) + " (traced value)")


def check_traced_fraction(name: str, value: jax.Array) -> None:
    """Checks a traced fraction when the compiled program runs.

    Under ``jit`` the value is unknown while tracing, and an out-of-range one would silently
    prune everything or nothing; a ``jax.debug.callback`` reads it on the host as the program
    runs and raises there, so the call fails (a ``JaxRuntimeError`` carrying this message).
    The cost is one scalar copied to the host per check.
    """
    jax.debug.callback(functools.partial(_raise_unless_fractions, name), value)


def check_fraction(name: str, value: Any, *, allow_traced: bool = True) -> None:
    """Checks that ``value`` is a fraction in [0, 1), as sparsities are.

    Args:
      name: how the caller calls the argument, used in the error message.
      value: a Python or NumPy real number, or (when ``allow_traced``) a JAX scalar; a traced
        one is checked when the compiled program runs (``check_traced_fraction``).
      allow_traced: whether a JAX scalar is accepted.

    Raises:
      TypeError: if ``value`` is not a real number (booleans are refused).
      ValueError: if ``value`` is NaN or outside [0, 1).
    """
    if isinstance(value, jax.Array) and value.ndim == 0 and allow_traced:
        if not is_concrete(value):
            check_traced_fraction(name, value)
            return
        value = value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1), got {value!r}")
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(_fraction_error(name, value))


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


def check_real(name: str, value: Any, *, minimum: float, strict: bool = False) -> float:
    """Checks that ``value`` is a finite real number ``>= minimum`` (``> minimum`` when
    ``strict``) and returns it as a float.

    Raises:
      TypeError: if ``value`` is not a real number (booleans are refused).
      ValueError: if it is NaN, infinite or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    low_ok = value > minimum if strict else value >= minimum
    if not (math.isfinite(value) and low_ok):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum}, "
                         f"got {value!r}")
    return float(value)
