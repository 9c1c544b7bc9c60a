"""The config boundary of pruning during training: rule names to ``MaskRule`` values.

A training config names its rule (``config.rule = "rigl"``) and keeps the rule's settings in
its ``sparsity`` section; this is the one place that maps both to a rule value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxprune.training.algorithms import SET, GradualMagnitude, MaskRule, RigL, Snip


def _gradual(s, straight_through: bool = False) -> GradualMagnitude:
    return GradualMagnitude(final_sparsity=s.final, begin=s.begin, end=s.end,
                            update_every=s.update_every, allocation=s.allocation,
                            pattern=s.pattern, straight_through=straight_through)


# name -> (the config's ``sparsity`` section -> rule); "dense" trains without a rule.
RULES: dict[str, Callable[[Any], MaskRule | None]] = {
    "dense": lambda s: None,
    "gradual": _gradual,
    "ste": lambda s: _gradual(s, straight_through=True),
    "snip": lambda s: Snip(sparsity=s.final, allocation=s.allocation, pattern=s.pattern),
    "set": lambda s: SET(sparsity=s.final, update_every=s.update_every, end=s.end,
                         drop_fraction=s.drop_fraction, allocation=s.allocation),
    "rigl": lambda s: RigL(sparsity=s.final, update_every=s.update_every, end=s.end,
                           drop_fraction=s.drop_fraction, allocation=s.allocation),
}


def rule_from_config(name: str, sparsity) -> MaskRule | None:
    """The rule ``name`` with the settings of a config's ``sparsity`` section.

    Args:
      name: a key of ``RULES``.
      sparsity: the section (``final``, ``begin``, ``end``, ``update_every``,
        ``drop_fraction``, ``allocation``, ``pattern``).

    Returns:
      The rule, or ``None`` for "dense".

    Raises:
      ValueError: for an unknown name (listing ``RULES``) or settings the rule refuses,
        naming the config fields.
    """
    if name not in RULES:
        raise ValueError(f"config.rule={name!r} is not one of {list(RULES)}")
    try:
        return RULES[name](sparsity)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.sparsity (rule {name!r}): {err}") from None
