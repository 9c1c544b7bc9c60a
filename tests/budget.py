"""Hypothesis budgets for property tests whose every example compiles new XLA programs.

Such a test costs about a second per example on the 2-core CI machine, so it runs a fraction
of the profile's examples (``compiling(0.125)``: 5 of the "ci" profile's 40, 50 of the
"thorough" profile's 400; ``HYPOTHESIS_PROFILE=thorough pytest tests`` for the deep run).
"""

from hypothesis import settings


def compiling(fraction: float = 0.25) -> settings:
    """Settings with ``fraction`` of the loaded profile's examples (at least 5)."""
    return settings(max_examples=max(5, int(settings.default.max_examples * fraction)))
