"""Structured pruning: cut whole heads, KV groups, MLP channels, hidden channels or blocks.

Surgery (``prune_width``, ``remove_blocks``, ``model_without_blocks``, ``fuse_blocks``,
``interpolate_blocks``), width importance (activation, magnitude, Taylor) and depth scores;
cut plans from scores and targets (``plan_width``, ``plan_depth``, ``cut_width``,
``cut_depth``); layer fusion (``fuse_runs`` and ``fold_blocks`` with ``AVERAGE``, ``LACO`` or a
``LowRankFusion``); Minitron's budgeted search (``plan_structured``, ``search_structured``);
the criteria as values in ``registry``.
Distillation after a cut is ``jaxprune.training.distill``. See docs/structured.md.
"""

from jaxprune.structured import registry
from jaxprune.structured.depth import (
    angular_distances,
    block_influence,
    closest_pairs,
    drop_one_perplexity,
    least_important,
)
from jaxprune.structured.fusion import (
    AVERAGE,
    LACO,
    AverageFusion,
    LaCoFusion,
    LowRankFusion,
    RunFusion,
    fold_blocks,
    fuse_runs,
    reduced_rank_ridge,
    runs_below,
)
from jaxprune.structured.importance import (
    Importance,
    activation_importance,
    magnitude_importance,
    taylor_importance,
)
from jaxprune.structured.plans import (
    DepthPlan,
    WidthPlan,
    cut_depth,
    cut_width,
    keep_top,
    plan_depth,
    plan_width,
)
from jaxprune.structured.registry import (
    DEPTH_CRITERIA,
    FUSE_CRITERIA,
    FUSION_METHODS,
    WIDTH_CRITERIA,
    DepthCriterion,
    WidthCriterion,
)
from jaxprune.structured.search import AXES as SEARCH_AXES
from jaxprune.structured.search import (
    SearchResult,
    Shape,
    StructuredPlan,
    StructuredScores,
    candidate_shapes,
    cut_structured,
    plan_structured,
    search_structured,
    shape_params,
)
from jaxprune.structured.surgery import (
    fuse_blocks,
    interpolate_blocks,
    model_without_blocks,
    prune_width,
    remove_blocks,
)

__all__ = [
    "AVERAGE",
    "LACO",
    "AverageFusion",
    "LaCoFusion",
    "LowRankFusion",
    "RunFusion",
    "SEARCH_AXES",
    "SearchResult",
    "Shape",
    "StructuredPlan",
    "StructuredScores",
    "candidate_shapes",
    "cut_structured",
    "plan_structured",
    "search_structured",
    "shape_params",
    "fold_blocks",
    "fuse_runs",
    "reduced_rank_ridge",
    "runs_below",
    "DEPTH_CRITERIA",
    "FUSE_CRITERIA",
    "FUSION_METHODS",
    "WIDTH_CRITERIA",
    "DepthCriterion",
    "DepthPlan",
    "Importance",
    "WidthCriterion",
    "WidthPlan",
    "activation_importance",
    "angular_distances",
    "block_influence",
    "closest_pairs",
    "cut_depth",
    "cut_width",
    "drop_one_perplexity",
    "fuse_blocks",
    "interpolate_blocks",
    "keep_top",
    "least_important",
    "magnitude_importance",
    "model_without_blocks",
    "plan_depth",
    "plan_width",
    "prune_width",
    "registry",
    "remove_blocks",
    "taylor_importance",
]
