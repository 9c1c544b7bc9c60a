"""Metrics: perplexity by the papers' protocol, greedy generation for smoke checks, and
greedy decoding with a key/value cache (the serving regime)."""

from jaxprune.eval.decode import forward_with_cache, greedy_decode, init_cache
from jaxprune.eval.generate import greedy_generate
from jaxprune.eval.perplexity import PerplexityResult, evaluation_windows, perplexity

__all__ = ["PerplexityResult", "evaluation_windows", "forward_with_cache", "greedy_decode",
           "greedy_generate", "init_cache", "perplexity"]
