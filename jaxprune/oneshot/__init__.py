"""One-shot pruning with calibration data: magnitude, OBD, Wanda and SparseGPT, block by block."""

from jaxprune.oneshot.engine import (
    ALLOCATIONS,
    CUSTOM,
    DEFAULT_LAYERS,
    METHODS,
    ORDERS,
    OneShotConfig,
    OneShotResult,
    achieved_sparsity,
    plan_oneshot,
    prune_oneshot,
)
from jaxprune.oneshot.fisher import empirical_fisher_diagonal
from jaxprune.oneshot.owl import outlier_ratio, owl_sparsities
from jaxprune.oneshot.scores import magnitude_scores, obd_scores, wanda_scores
from jaxprune.oneshot.sparsegpt import (
    check_sparsegpt_settings,
    sparsegpt_prune_layer,
    sparsegpt_with_retry,
)
from jaxprune.oneshot.stats import InputStats, add_input_stats, batch_input_stats

__all__ = [
    "ALLOCATIONS",
    "CUSTOM",
    "DEFAULT_LAYERS",
    "METHODS",
    "ORDERS",
    "InputStats",
    "OneShotConfig",
    "OneShotResult",
    "achieved_sparsity",
    "add_input_stats",
    "batch_input_stats",
    "check_sparsegpt_settings",
    "empirical_fisher_diagonal",
    "magnitude_scores",
    "obd_scores",
    "outlier_ratio",
    "owl_sparsities",
    "plan_oneshot",
    "prune_oneshot",
    "sparsegpt_prune_layer",
    "sparsegpt_with_retry",
    "wanda_scores",
]
