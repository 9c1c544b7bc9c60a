"""Metrics: perplexity by the papers' protocol, and greedy generation for smoke checks."""

from jaxprune.eval.generate import greedy_generate
from jaxprune.eval.perplexity import PerplexityResult, evaluation_windows, perplexity

__all__ = ["PerplexityResult", "evaluation_windows", "greedy_generate", "perplexity"]
