"""Minitron's search for a structured shape under a parameter budget.

Every combination of depth (blocks removed by a depth score) and width (query heads per
key/value group, MLP channels, hidden size) on a grid is counted from the config alone; those
within ``tolerance`` of the budget are the candidates (``candidate_shapes``). Each candidate
becomes a plan (``plan_structured``: the width plan from importance scores, the depth plan from
depth scores) and a cut model (``cut_structured``). ``search_structured`` ranks them the way
Minitron does: the LM loss of each cut model on held-out calibration text, then a short
distillation of the best few and their loss after it; the lowest wins.

References:
  Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation";
  Sreenivas et al. 2024, "LLM Pruning and Distillation in Practice: The Minitron Approach".
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging

from jaxprune.structured.depth import least_important
from jaxprune.structured.importance import Importance
from jaxprune.structured.plans import WidthPlan, plan_width
from jaxprune.structured.surgery import prune_width, remove_blocks


@dataclasses.dataclass(frozen=True)
class Shape:
    """A candidate architecture: blocks removed and the widths every kept block has.

    Attributes:
      blocks_removed: how many blocks the depth scores drop.
      heads_per_group: query heads kept in each key/value group.
      mlp_channels: MLP channels kept per block.
      hidden: hidden size kept.
      params: the parameter count of the cut model (embeddings included).
    """

    blocks_removed: int
    heads_per_group: int
    mlp_channels: int
    hidden: int
    params: int

    def label(self) -> str:
        """A short name for tables: ``"-4 blocks, 2 heads/group, MLP 1280, hidden 512"``."""
        return (f"-{self.blocks_removed} blocks, {self.heads_per_group} heads/group, "
                f"MLP {self.mlp_channels}, hidden {self.hidden}")


def _grid(full: int, step: int, lowest: int) -> list[int]:
    """``full`` and the multiples of ``step`` below it down to ``lowest``, largest first."""
    return [full] + [v for v in range(full - full % step or full - step, lowest - 1, -step)
                     if v < full]


def shape_params(config, blocks_removed: int, heads_per_group: int, mlp_channels: int,
                 hidden: int, *, include_embeddings: bool = True) -> int:
    """Parameters of ``config`` cut to a shape (from the config alone)."""
    kv, n = config.num_kv_heads[0], config.num_layers - blocks_removed
    cut = config.replace(num_layers=n, hidden_size=hidden, num_heads=(heads_per_group * kv,) * n,
                         num_kv_heads=(kv,) * n, intermediate_size=(mlp_channels,) * n)
    return cut.num_params(include_embeddings=include_embeddings)


AXES = ("depth", "width")


def candidate_shapes(config, target_params: int, *, tolerance: float = 0.02,
                     hidden_step: int = 64, mlp_step: int = 64,
                     max_blocks_removed: int | None = None,
                     axes: Sequence[str] = AXES) -> list[Shape]:
    """Every grid shape within ``tolerance`` of ``target_params`` (embeddings included),
    closest to the budget first.

    Widths shrink in steps of ``hidden_step`` and ``mlp_step`` (down to one step), query heads
    per key/value group from all to one (grouped-query attention keeps its groups), blocks
    removed from none to ``max_blocks_removed`` (default: half the model). ``axes`` limits the
    search to depth alone or width alone (the baselines a combined shape is compared with).

    Raises:
      ValueError: for a model with per-block widths, settings out of range, or a budget no
        shape meets (naming the smallest and largest counts the grid reaches).
    """
    if not config.is_uniform:
        raise ValueError("the search needs a model whose blocks have equal widths; this one "
                         "was already cut per block")
    layers = config.num_layers
    max_removed = layers // 2 if max_blocks_removed is None else max_blocks_removed
    if not 0 <= max_removed < layers:
        raise ValueError(f"max_blocks_removed must be in [0, {layers - 1}], got {max_removed}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    for name, step in (("hidden_step", hidden_step), ("mlp_step", mlp_step)):
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"{name} must be a positive integer, got {step!r}")
    if not axes or any(a not in AXES for a in axes):
        raise ValueError(f"axes must name some of {list(AXES)}, got {list(axes)}")
    per_group = config.num_heads[0] // config.num_kv_heads[0]
    width = "width" in axes
    shapes = []
    for removed, heads, mlp, hidden in itertools.product(
            range(max_removed + 1) if "depth" in axes else [0],
            range(per_group, 0, -1) if width else [per_group],
            _grid(config.intermediate_size[0], mlp_step, mlp_step) if width
            else [config.intermediate_size[0]],
            _grid(config.hidden_size, hidden_step, hidden_step) if width
            else [config.hidden_size]):
        params = shape_params(config, removed, heads, mlp, hidden)
        if abs(params - target_params) <= tolerance * target_params:
            shapes.append(Shape(removed, heads, mlp, hidden, params))
    if not shapes:
        smallest = shape_params(config, max_removed, 1, mlp_step, hidden_step)
        raise ValueError(f"no shape is within {tolerance:.0%} of target_params="
                         f"{target_params:,} (axes {list(axes)}): the full grid reaches "
                         f"{smallest:,} to {config.num_params():,} parameters")
    return sorted(shapes, key=lambda s: (abs(s.params - target_params), s.blocks_removed,
                                         -s.hidden, -s.mlp_channels))


@dataclasses.dataclass(frozen=True)
class StructuredScores:
    """What the search's plans are made from: width importance and per-block depth scores
    (higher kept, e.g. ``block_influence``), both measured once on the uncut model."""

    importance: Importance
    depth: np.ndarray


@dataclasses.dataclass(frozen=True)
class StructuredPlan:
    """A candidate as a value: its shape, the width plan and the blocks removed (indices of
    the uncut model)."""

    shape: Shape
    width: WidthPlan
    remove: tuple[int, ...]


def plan_structured(model_config, scores: StructuredScores, target_params: int,
                    **grid) -> list[StructuredPlan]:
    """The plans of every candidate shape within the budget (``candidate_shapes``; ``grid``:
    its keyword settings), in its order.

    Raises:
      ValueError: as ``candidate_shapes``, or for depth scores of the wrong length.
    """
    depth = np.asarray(scores.depth)
    if depth.shape != (model_config.num_layers,):
        raise ValueError(f"scores.depth must hold one score per block, shape "
                         f"({model_config.num_layers},), got {depth.shape}")
    per_group = model_config.num_heads[0] // model_config.num_kv_heads[0]
    plans = []
    for shape in candidate_shapes(model_config, target_params, **grid):
        width = plan_width(
            model_config, scores.importance,
            heads_per_group=0 if shape.heads_per_group == per_group else shape.heads_per_group,
            mlp_channels=0 if shape.mlp_channels == model_config.intermediate_size[0]
            else shape.mlp_channels,
            hidden=0 if shape.hidden == model_config.hidden_size else shape.hidden)
        plans.append(StructuredPlan(shape, width,
                                    tuple(least_important(depth, shape.blocks_removed))))
    return plans


def cut_structured(model, plan: StructuredPlan):
    """The model cut to ``plan``: widths first (the plan indexes the uncut model's blocks),
    then the blocks removed."""
    w = plan.width
    cut = prune_width(model, heads=w.heads, mlp_channels=w.mlp_channels, hidden=w.hidden)
    return remove_blocks(cut, list(plan.remove)) if plan.remove else cut


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The search's outcome.

    Attributes:
      best: the winning plan.
      model: the winner after its ranking distillation.
      rows: one dict per candidate, in candidate order: ``shape`` fields, ``cut_loss`` and,
        for the shortlisted, ``distilled_loss``.
      seconds: wall time of the search.
    """

    best: StructuredPlan
    model: object
    rows: list[dict]
    seconds: float


def search_structured(model, plans: Sequence[StructuredPlan], *, loss_fn: Callable,
                      distill_fn: Callable, shortlist: int = 3) -> SearchResult:
    """Ranks candidate plans as Minitron does: every cut model's loss, then a short
    distillation of the ``shortlist`` lowest and their loss after it; the lowest wins (ties:
    the earlier candidate).

    Args:
      model: the uncut model (not changed).
      plans: from ``plan_structured``.
      loss_fn: ``model -> float``, the LM loss on held-out text (never the evaluation text).
      distill_fn: ``student -> student``, the short distillation (the same budget for each).
      shortlist: how many cut models are distilled, ``1 <= shortlist``.

    Returns:
      A ``SearchResult``.

    Raises:
      ValueError: for no plans or a bad shortlist, before any work; for a non-finite loss.
    """
    if not plans:
        raise ValueError("the search needs at least one plan")
    if isinstance(shortlist, bool) or not isinstance(shortlist, int) or shortlist < 1:
        raise ValueError(f"shortlist must be a positive integer, got {shortlist!r}")
    started = time.perf_counter()
    rows = []
    for i, plan in enumerate(plans):
        loss = _finite(loss_fn(cut_structured(model, plan)), plan)
        rows.append({**dataclasses.asdict(plan.shape), "cut_loss": loss})
        logging.info("search: candidate %d/%d (%s): loss %.4f, %.1f s so far", i + 1,
                     len(plans), plan.shape.label(), loss, time.perf_counter() - started)
    ranked = sorted(range(len(plans)), key=lambda i: (rows[i]["cut_loss"], i))[:shortlist]
    best, best_model = None, None
    for i in ranked:
        distilled = distill_fn(cut_structured(model, plans[i]))
        rows[i]["distilled_loss"] = _finite(loss_fn(distilled), plans[i])
        logging.info("search: %s distilled: loss %.4f", plans[i].shape.label(),
                     rows[i]["distilled_loss"])
        if best is None or rows[i]["distilled_loss"] < rows[best]["distilled_loss"]:
            best, best_model = i, distilled
    return SearchResult(plans[best], best_model, rows, time.perf_counter() - started)


def _finite(loss, plan: StructuredPlan) -> float:
    loss = float(loss)
    if not np.isfinite(loss):
        raise ValueError(f"the loss of candidate {plan.shape.label()} is {loss}")
    return loss
