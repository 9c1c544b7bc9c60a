"""Structured pruning: cut whole heads, KV groups, MLP channels, hidden channels or blocks.

Surgery (``prune_width``, ``remove_blocks``, ``fuse_blocks``), width importance (activation,
magnitude, Taylor) and depth scores; ``experiments/structured.py`` adds distillation. See
docs/structured.md.
"""

from jaxprune.structured.depth import (
    angular_distances,
    block_influence,
    closest_pairs,
    drop_one_perplexity,
    least_important,
)
from jaxprune.structured.importance import (
    Importance,
    activation_importance,
    magnitude_importance,
    taylor_importance,
)
from jaxprune.structured.surgery import fuse_blocks, prune_width, remove_blocks

__all__ = [
    "Importance",
    "activation_importance",
    "angular_distances",
    "block_influence",
    "closest_pairs",
    "drop_one_perplexity",
    "fuse_blocks",
    "least_important",
    "magnitude_importance",
    "prune_width",
    "remove_blocks",
    "taylor_importance",
]
