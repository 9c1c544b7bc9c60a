"""Sparsity patterns: which weights compete with each other for survival.

A pattern names the comparison group of a selection:

* ``"unstructured"`` (alias ``"per_tensor"``): all entries of a tensor compete.
* ``"per_output"``: entries feeding one output unit compete, that is one column of an
  ``[in, out]`` kernel (all entries sharing an index on the last axis). This is the comparison
  group of Wanda.
* ``"global"``: all entries of all pruned tensors compete.
* ``"N:M"`` (for example ``"2:4"``): in every run of M consecutive entries along the input axis
  (axis 0 of a kernel), N are kept. This is the layout of NVIDIA sparse tensor cores.
"""

from __future__ import annotations

import re
from typing import NamedTuple

PER_TENSOR = "per_tensor"
PER_OUTPUT = "per_output"
GLOBAL = "global"
N_OF_M = "n_of_m"

_ALIASES = {"unstructured": PER_TENSOR, PER_TENSOR: PER_TENSOR, PER_OUTPUT: PER_OUTPUT,
            GLOBAL: GLOBAL}
_NM_RE = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*$")


class Pattern(NamedTuple):
    """A parsed sparsity pattern.

    Attributes:
      kind: one of ``"per_tensor"``, ``"per_output"``, ``"global"``, ``"n_of_m"``.
      n: entries kept in each group of ``m`` (``n_of_m`` only).
      m: size of a group along the input axis (``n_of_m`` only).
    """

    kind: str
    n: int = 0
    m: int = 0

    @property
    def is_n_of_m(self) -> bool:
        return self.kind == N_OF_M

    @property
    def sparsity(self) -> float | None:
        """The sparsity an N:M pattern implies, ``1 - n / m``; ``None`` for the others."""
        return 1.0 - self.n / self.m if self.is_n_of_m else None

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.is_n_of_m else self.kind


def n_of_m(n: int, m: int) -> Pattern:
    """Builds a validated N:M pattern.

    Args:
      n: entries kept per group, ``0 <= n < m``.
      m: group size along the input axis, ``m >= 1``.

    Returns:
      The pattern.

    Raises:
      ValueError: if ``n < 0`` or ``n >= m``.
    """
    if isinstance(n, bool) or isinstance(m, bool) or not (
        isinstance(n, int) and isinstance(m, int)
    ):
        raise TypeError(f"pattern N:M needs integers N and M, got N={n!r}, M={m!r}")
    if m < 1:
        raise ValueError(f"pattern N:M needs M >= 1, got M={m}")
    if n < 0:
        raise ValueError(f"pattern N:M needs N >= 0, got N={n} (in {n}:{m})")
    if n >= m:
        raise ValueError(
            f"pattern N:M needs N < M (N entries are kept out of every M), got {n}:{m}"
        )
    return Pattern(N_OF_M, n, m)


def parse_pattern(pattern: str | Pattern) -> Pattern:
    """Parses a pattern string such as ``"unstructured"``, ``"per_output"`` or ``"2:4"``.

    Args:
      pattern: a string or an already parsed ``Pattern``.

    Returns:
      The validated ``Pattern``.

    Raises:
      ValueError: for an unknown name or an invalid N:M pair.
    """
    if isinstance(pattern, Pattern):
        return n_of_m(pattern.n, pattern.m) if pattern.is_n_of_m else parse_pattern(pattern.kind)
    if not isinstance(pattern, str):
        raise TypeError(
            f"pattern must be a string such as 'unstructured' or '2:4', got {pattern!r}"
        )
    if pattern in _ALIASES:
        return Pattern(_ALIASES[pattern])
    match = _NM_RE.match(pattern)
    if match:
        return n_of_m(int(match.group(1)), int(match.group(2)))
    raise ValueError(
        f"pattern must be one of {sorted(_ALIASES)} or 'N:M' with integers 0 <= N < M, "
        f"got {pattern!r}"
    )
