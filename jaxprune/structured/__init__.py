"""Structured pruning: cut whole heads, KV groups, MLP channels, hidden channels or blocks.

Work in progress (issue "Structured pruning"): surgery (``prune_width``, ``remove_blocks``),
width importance (activation, magnitude, Taylor) and depth scores are built; layer fusion,
distillation and the experiment binary come next.
"""

from jaxprune.structured.depth import (
    angular_distances,
    block_influence,
    drop_one_perplexity,
    least_important,
)
from jaxprune.structured.importance import (
    Importance,
    activation_importance,
    magnitude_importance,
    taylor_importance,
)
from jaxprune.structured.surgery import prune_width, remove_blocks

__all__ = [
    "Importance",
    "activation_importance",
    "angular_distances",
    "block_influence",
    "drop_one_perplexity",
    "least_important",
    "magnitude_importance",
    "prune_width",
    "remove_blocks",
    "taylor_importance",
]
