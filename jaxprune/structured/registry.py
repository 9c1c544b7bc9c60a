"""Structured importance criteria as values, and the names configs use for them.

A depth criterion scores blocks (or runs of blocks) and turns the scores into a ``DepthPlan``;
a width criterion gives the ``Importance`` of every head, channel and hidden unit for
``plan_width``. Configs name them (``config.cut.criterion = "taylor"``) through the three
registries below, the only place the names live; ``FUSION_METHODS`` names the ways a fused
pair becomes one block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxprune.structured.depth import angular_distances, block_influence, drop_one_perplexity
from jaxprune.structured.fusion import AVERAGE, LACO, LowRankFusion, RunFusion
from jaxprune.structured.importance import (
    Importance,
    activation_importance,
    magnitude_importance,
    taylor_importance,
)
from jaxprune.structured.plans import DepthPlan, plan_depth


@dataclasses.dataclass(frozen=True)
class DepthCriterion:
    """Scores for a depth cut and how they become a plan.

    Attributes:
      name: the criterion's name in reports.
      score_fn: ``(model, segments, blocks, batch_size) -> scores``.
      runs: the scores rate runs of ``blocks`` consecutive blocks (so they depend on
        ``blocks``) and the lowest run is dropped; else each block is rated, higher kept.
      fuse: the scores rate pairs (``angular_distances`` with n=2) and pairs are fused.
      fold: the scores rate blocks (higher kept) and the lowest are folded into the kept
        block below them (``fold_blocks``).
    """

    name: str
    score_fn: Callable[..., np.ndarray]
    runs: bool = False
    fuse: bool = False
    fold: bool = False

    def scores_key(self, blocks: int) -> str:
        """What the scores depend on beyond the model and data (for caching them)."""
        return f"{self.name}{blocks}" if self.runs else self.name

    def scores(self, model, segments: np.ndarray, blocks: int, batch_size: int) -> np.ndarray:
        """The criterion's scores on the calibration segments."""
        return self.score_fn(model, segments, blocks, batch_size)

    def plan(self, scores: np.ndarray, blocks: int, *, lowest: int = 0) -> DepthPlan:
        """The plan ``blocks`` fewer (fused runs start at block ``lowest`` or above)."""
        return plan_depth(scores, blocks, contiguous=self.runs, fuse=self.fuse, fold=self.fold,
                          lowest=lowest)


def _drop_one(model, segments, blocks, batch_size):
    del blocks
    # Scored on the calibration text, never the evaluation text.
    return drop_one_perplexity(model, np.asarray(segments).ravel(),
                               window=np.asarray(segments).shape[1], batch_size=batch_size)


def _block_influence(model, segments, blocks, batch_size):
    del blocks
    return block_influence(model, segments, batch_size=batch_size)


DEPTH_CRITERIA = {
    "block_influence": DepthCriterion("block_influence", _block_influence),
    "angular": DepthCriterion(
        "angular", lambda m, s, n, b: angular_distances(m, s, n, batch_size=b), runs=True),
    "drop_one": DepthCriterion("drop_one", _drop_one),
}
# A fusion cut either fuses the most similar pairs (angular) or removes the blocks a drop
# criterion would and folds each into the block below it (the same blocks as that depth cut).
FUSE_CRITERIA = {
    "angular": DepthCriterion(
        "angular2", lambda m, s, n, b: angular_distances(m, s, 2, batch_size=b), fuse=True),
    "block_influence": DepthCriterion("block_influence", _block_influence, fold=True),
}


# How a fused pair becomes one block (config.cut.fusion); each entry builds the method from
# the config's cut section (the low-rank fit takes config.cut.rank).
FUSION_METHODS: dict[str, Callable[..., RunFusion]] = {
    "average": lambda cut: AVERAGE,
    "laco": lambda cut: LACO,
    "lowrank": lambda cut: LowRankFusion(rank=cut.rank),
}


@dataclasses.dataclass(frozen=True)
class WidthCriterion:
    """Per-unit importance for a width cut.

    Attributes:
      name: the criterion's name in reports.
      importance_fn: ``(model, segments, batch_size, **options) -> Importance``.
      options: the config fields (of ``config.cut``) passed as keyword options.
      max_batch_size: a cap on segments per pass (a backward pass keeps every block's
        activations: SmolLM2 on 8 x 512 tokens needs more than 20 GB on a CPU).
    """

    name: str
    importance_fn: Callable[..., Importance]
    options: tuple[str, ...] = ()
    max_batch_size: int | None = None

    def scores_key(self, options: dict) -> str:
        """What the importance depends on beyond the model and data (for caching it)."""
        return "-".join([self.name, *(str(options[o]) for o in self.options)])

    def importance(self, model, segments: np.ndarray, batch_size: int,
                   **options) -> Importance:
        """The importance of every unit on the calibration segments."""
        if self.max_batch_size is not None:
            batch_size = min(batch_size, self.max_batch_size)
        return self.importance_fn(model, segments, batch_size,
                                  **{o: options[o] for o in self.options})


WIDTH_CRITERIA = {
    "activation": WidthCriterion(
        "activation", lambda m, s, b, **o: activation_importance(m, s, batch_size=b, **o),
        options=("seq_agg", "batch_agg")),
    "magnitude": WidthCriterion("magnitude", lambda m, s, b: magnitude_importance(m)),
    "taylor": WidthCriterion(
        "taylor", lambda m, s, b: taylor_importance(m, s, batch_size=b), max_batch_size=2),
}
