"""Structured pruning: cut whole heads, KV groups, MLP channels, hidden channels or blocks.

Work in progress: surgery is built (``prune_width``, ``remove_blocks``); importance criteria,
depth scores, layer fusion and distillation come next (issue "Structured pruning").
"""

from jaxprune.structured.surgery import prune_width, remove_blocks

__all__ = ["prune_width", "remove_blocks"]
