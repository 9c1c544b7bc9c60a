"""jaxprune: pruning studies in JAX and Flax.

The core is a set of pure functions over parameter trees (any pytree of arrays):

* criteria ``(params, stats) -> scores``: ``magnitude``, ``wanda``, ``obd``,
  ``random_criterion(key)``, ``leafwise`` to write your own;
* selection ``(scores, sparsity, pattern) -> masks``: ``select_masks``;
* allocation ``(params, target) -> sparsity tree``: ``allocation.uniform``, ``allocation.erk``;
* schedules ``step -> sparsity``: ``constant_schedule``, ``one_shot_schedule``,
  ``polynomial_schedule``;
* masks: ``apply_masks``, ``combine_masks``, ``count_kept``, ``sparsity`` (the one measure of
  sparsity reached), ``sparsity_report``,
  ``check_n_of_m_masks``;
* ``prune`` composes allocation, criterion and selection in one call;
* ``training``: pruning during training, an optax transformation (``sparse_training``) with
  gradual magnitude, straight-through, SNIP, SET and RigL rules.
"""

from jaxprune import allocation, criteria, masks, patterns, schedules, selection, training
from jaxprune.allocation import default_prunable, erk, uniform
from jaxprune.criteria import Criterion, leafwise, magnitude, obd, random_criterion, wanda
from jaxprune.masks import (
    LeafSparsity,
    SparsityReport,
    apply_masks,
    check_masks,
    check_n_of_m_masks,
    combine_masks,
    count_kept,
    is_n_of_m,
    sparsity,
    sparsity_report,
)
from jaxprune.paths import path_to_str
from jaxprune.patterns import Pattern, n_of_m, parse_pattern
from jaxprune.pipeline import prune
from jaxprune.schedules import constant_schedule, one_shot_schedule, polynomial_schedule
from jaxprune.selection import (
    num_pruned,
    select_global,
    select_masks,
    select_n_of_m,
    select_per_output,
    select_per_tensor,
)

__version__ = "0.1.0"

__all__ = [
    "Criterion",
    "LeafSparsity",
    "Pattern",
    "SparsityReport",
    "allocation",
    "apply_masks",
    "check_masks",
    "check_n_of_m_masks",
    "combine_masks",
    "constant_schedule",
    "count_kept",
    "criteria",
    "default_prunable",
    "erk",
    "is_n_of_m",
    "leafwise",
    "magnitude",
    "masks",
    "n_of_m",
    "num_pruned",
    "obd",
    "one_shot_schedule",
    "parse_pattern",
    "path_to_str",
    "patterns",
    "polynomial_schedule",
    "prune",
    "random_criterion",
    "schedules",
    "select_global",
    "select_masks",
    "select_n_of_m",
    "select_per_output",
    "select_per_tensor",
    "selection",
    "sparsity",
    "sparsity_report",
    "training",
    "uniform",
    "wanda",
]
