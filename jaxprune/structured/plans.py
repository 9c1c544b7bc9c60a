"""Cut plans: from importance scores and target sizes to what surgery removes.

A plan is a plain value (which heads, channels, hidden units or blocks stay), so it can be
inspected, saved and applied to any copy of the model: ``plan_width`` then ``cut_width``;
``plan_depth`` then ``cut_depth``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxprune.structured.depth import closest_pairs, least_important
from jaxprune.structured.fusion import AVERAGE, fold_blocks, fuse_runs
from jaxprune.structured.importance import Importance
from jaxprune.structured.surgery import prune_width, remove_blocks


def keep_top(scores: np.ndarray, count: int) -> list[int]:
    """Indices of the ``count`` highest scores, in index order (ties: lower index kept).

    Raises:
      ValueError: unless ``0 <= count <= len(scores)``.
    """
    scores = np.asarray(scores)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= scores.size:
        raise ValueError(f"count must be an integer in [0, {scores.size}], got {count!r}")
    order = np.argsort(-scores, kind="stable")
    return sorted(order[:count].tolist())


@dataclasses.dataclass(frozen=True)
class WidthPlan:
    """What a width cut keeps; ``None`` keeps a dimension whole.

    Attributes:
      heads: block -> kept query heads (the same number in every key/value group).
      mlp_channels: block -> kept MLP channels.
      hidden: kept hidden (embedding) channels, shared by every block.
    """

    heads: dict[int, list[int]] | None = None
    mlp_channels: dict[int, list[int]] | None = None
    hidden: list[int] | None = None


def plan_width(model_config, importance: Importance, *, heads_per_group: int = 0,
               mlp_channels: int = 0, hidden: int = 0) -> WidthPlan:
    """Keeps the most important units of each dimension (0 keeps a dimension whole).

    Heads are chosen within each key/value group, so grouped-query attention stays valid.

    Args:
      model_config: the model's ``LlamaConfig`` (per-block heads, groups and widths).
      importance: per-unit scores (``activation_importance``, ``magnitude_importance``,
        ``taylor_importance``).
      heads_per_group: query heads kept in each key/value group.
      mlp_channels: MLP channels kept in each block.
      hidden: hidden channels kept.

    Returns:
      A ``WidthPlan``.

    Raises:
      ValueError: for a count above what a block has.

    References:
      Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge
      Distillation" (Minitron): width pruning by activation importance.
    """
    c = model_config
    heads = mlp = kept_hidden = None
    if heads_per_group:
        heads = {}
        for b in range(c.num_layers):
            per_group = c.num_heads[b] // c.num_kv_heads[b]
            grouped = np.asarray(importance.heads[b]).reshape(c.num_kv_heads[b], per_group)
            heads[b] = [g * per_group + i for g in range(c.num_kv_heads[b])
                        for i in keep_top(grouped[g], heads_per_group)]
    if mlp_channels:
        mlp = {b: keep_top(importance.mlp[b], mlp_channels) for b in range(c.num_layers)}
    if hidden:
        kept_hidden = keep_top(importance.hidden, hidden)
    return WidthPlan(heads, mlp, kept_hidden)


def cut_width(model, plan: WidthPlan):
    """A new model with only the units ``plan`` keeps (``prune_width``)."""
    return prune_width(model, heads=plan.heads, mlp_channels=plan.mlp_channels,
                       hidden=plan.hidden)


@dataclasses.dataclass(frozen=True)
class DepthPlan:
    """What a depth cut does.

    Attributes:
      remove: blocks dropped, sorted.
      fuse: first block of each pair of consecutive blocks merged into one, sorted.
      fold: blocks removed and folded into the kept block below them (``fold_blocks``),
        sorted.
    """

    remove: tuple[int, ...] = ()
    fuse: tuple[int, ...] = ()
    fold: tuple[int, ...] = ()


def plan_depth(scores: np.ndarray, blocks: int, *, contiguous: bool = False,
               fuse: bool = False, fold: bool = False, lowest: int = 0) -> DepthPlan:
    """The blocks to drop (or pairs to fuse, or blocks to fold) from depth scores.

    Args:
      scores: per-block scores, higher kept (``block_influence``, ``drop_one_perplexity``);
        with ``contiguous`` or ``fuse``, ``angular_distances`` (entry ``l`` scores the run
        starting at block ``l``; lower is more redundant).
      blocks: how many blocks fewer.
      contiguous: drop the run of ``blocks`` consecutive blocks with the lowest score.
      fuse: merge ``blocks`` disjoint pairs, most similar first (``closest_pairs``).
      fold: remove the ``blocks`` lowest-scored blocks above block ``lowest``, each to be
        folded into the kept block below it.
      lowest: with ``fuse`` or ``fold``, the lowest block a fused run may start at.

    Returns:
      A ``DepthPlan``.

    Raises:
      ValueError: for a count the scores cannot satisfy.

    References:
      Men et al. 2024 (ShortGPT, Block Influence); Gromov et al. 2024 (angular distance of
      runs of blocks).
    """
    if fuse:
        return DepthPlan(fuse=tuple(closest_pairs(scores, blocks, lowest=lowest)))
    if fold:  # a removed block needs a kept block below it, itself at `lowest` or above
        above = np.asarray(scores, np.float64)[lowest + 1:]
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not (
                0 <= blocks <= above.size):
            raise ValueError(f"blocks must be an integer in [0, {above.size}] (the blocks "
                             f"above block {lowest}), got {blocks!r}")
        chosen = np.argsort(above, kind="stable")[:blocks] + lowest + 1
        return DepthPlan(fold=tuple(sorted(chosen.tolist())))
    if contiguous:
        start = int(np.argmin(np.asarray(scores)))
        return DepthPlan(remove=tuple(range(start, start + blocks)))
    return DepthPlan(remove=tuple(least_important(scores, blocks)))


def cut_depth(model, plan: DepthPlan, *, fusion=AVERAGE, segments: np.ndarray | None = None,
              batch_size: int = 8):
    """A new model without the plan's blocks: dropped, then pairs fused; or folded into the
    kept blocks below them.

    Args:
      model: the model (not changed).
      plan: the cut.
      fusion: how a pair or a folded run becomes one block (``jaxprune.structured.fusion``:
        ``AVERAGE``, ``LACO``, a ``LowRankFusion``).
      segments: calibration token ids for a fusion method that fits on data.
      batch_size: segments per forward pass of such a fit.

    Raises:
      ValueError: for a plan that folds and also removes or fuses, or a run the fusion method
        refuses (``fuse_runs``, ``fold_blocks``).
    """
    if plan.fold and (plan.remove or plan.fuse):
        raise ValueError(f"a depth plan folds blocks or removes and fuses them, not both: {plan}")
    if plan.fold:
        return fold_blocks(model, plan.fold, fusion, segments=segments, batch_size=batch_size)
    student = remove_blocks(model, list(plan.remove)) if plan.remove else model
    if plan.fuse:
        student = fuse_runs(student, plan.fuse, 2, fusion, segments=segments,
                            batch_size=batch_size)
    return student
