"""Pruning during training: an optax transformation and the mask rules it applies.

``sparse_training(optimizer, rule)`` keeps masks in the optimizer state and pruned weights at
exactly zero; the rules are gradual magnitude pruning (optionally straight-through), SNIP at
initialisation, and the drop-and-grow methods SET and RigL.
"""

from jaxprune.training.algorithms import SET, GradualMagnitude, RigL, Snip
from jaxprune.training.transform import SparseTrainingState, masked_fraction, sparse_training

__all__ = [
    "SET",
    "GradualMagnitude",
    "RigL",
    "Snip",
    "SparseTrainingState",
    "masked_fraction",
    "sparse_training",
]
