"""Minitron's budgeted search (jaxprune/structured/search.py) on a tiny random Llama: every
plan meets the budget and grouped-query attention, counted on the cut model's real arrays;
the ranking is deterministic and follows the losses; bad budgets and settings are refused."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxprune import models, structured
from jaxprune.eval import perplexity

GRID = dict(hidden_step=4, mlp_step=8)


def tiny(layers=4, seed=0):
    config = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=layers, num_heads=4,
                                num_kv_heads=2, intermediate_size=48, head_dim=8)
    return models.Llama(config, rngs=nnx.Rngs(seed))


def counted_params(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def scores(model, seed=3):
    rng = np.random.default_rng(seed)
    c = model.config
    importance = structured.Importance(
        heads=[rng.random(h) for h in c.num_heads],
        kv_groups=[rng.random(kv) for kv in c.num_kv_heads],
        mlp=[rng.random(m) for m in c.intermediate_size], hidden=rng.random(c.hidden_size))
    return structured.StructuredScores(importance, rng.random(c.num_layers))


def test_every_plan_meets_the_budget_and_keeps_whole_groups():
    model, target = tiny(), 24_000
    plans = structured.plan_structured(model.config, scores(model), target, tolerance=0.05,
                                       **GRID)
    assert len(plans) > 3
    assert len({p.shape for p in plans}) == len(plans)
    for plan in plans:
        cut = structured.cut_structured(model, plan)
        c = cut.config
        assert counted_params(cut) == plan.shape.params == c.num_params()
        assert abs(plan.shape.params - target) <= 0.05 * target
        assert c.num_layers == 4 - plan.shape.blocks_removed == 4 - len(plan.remove)
        assert c.num_kv_heads == (2,) * c.num_layers  # groups are never cut
        assert c.num_heads == (2 * plan.shape.heads_per_group,) * c.num_layers
        assert c.intermediate_size == (plan.shape.mlp_channels,) * c.num_layers
        assert c.hidden_size == plan.shape.hidden
    distances = [abs(p.shape.params - target) for p in plans]
    assert distances == sorted(distances)


def test_depth_only_and_width_only_searches_stay_on_their_axis():
    config = tiny(layers=6).config
    depth = structured.candidate_shapes(config, 30_000, tolerance=0.1, axes=("depth",), **GRID)
    width = structured.candidate_shapes(config, 30_000, tolerance=0.1, axes=("width",), **GRID)
    assert depth and width
    assert all((s.heads_per_group, s.mlp_channels, s.hidden) == (2, 48, 32) for s in depth)
    assert all(s.blocks_removed == 0 for s in width)
    both = set(structured.candidate_shapes(config, 30_000, tolerance=0.1, **GRID))
    assert set(depth) | set(width) <= both


def test_plans_follow_the_scores():
    model = tiny()
    s = scores(model)
    plan = next(p for p in structured.plan_structured(model.config, s, 24_000, tolerance=0.1,
                                                      **GRID) if p.shape.blocks_removed == 1)
    assert plan.remove == (int(np.argmin(s.depth)),)
    if plan.width.mlp_channels is not None:
        kept = plan.width.mlp_channels[0]
        assert set(kept) == set(np.argsort(-s.importance.mlp[0])[:len(kept)].tolist())


def lm_loss(data):
    return lambda net: float(np.log(perplexity(net, data.ravel(), window=data.shape[1],
                                               progress=False).perplexity))


def test_search_ranks_deterministically_and_distils_the_shortlist():
    model = tiny(seed=1)
    data = np.random.default_rng(5).integers(1, 64, (4, 16)).astype(np.int32)
    plans = structured.plan_structured(model.config, scores(model), 26_000, tolerance=0.05,
                                       **GRID)[:3]
    # A stand-in distillation that is deterministic and changes the loss: halve the head.
    def distill(student):
        tensors = models.hf_tensors_from_model(student)
        tensors["model.norm.weight"] = tensors["model.norm.weight"] * 0.5
        return models.model_from_hf_tensors(student.config, tensors)

    first = structured.search_structured(model, plans, loss_fn=lm_loss(data),
                                         distill_fn=distill, shortlist=2)
    again = structured.search_structured(model, plans, loss_fn=lm_loss(data),
                                         distill_fn=distill, shortlist=2)
    assert first.rows == again.rows and first.best == again.best
    distilled = [i for i, r in enumerate(first.rows) if "distilled_loss" in r]
    by_cut_loss = sorted(range(len(plans)), key=lambda i: first.rows[i]["cut_loss"])
    assert sorted(distilled) == sorted(by_cut_loss[:2])
    winner = min(distilled, key=lambda i: first.rows[i]["distilled_loss"])
    assert first.best == plans[winner]
    assert lm_loss(data)(first.model) == first.rows[winner]["distilled_loss"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(target_params=1_000), r"no shape is within 2% of target_params=1,000 \(axes .*\): "
                                r"the full grid reaches [\d,]+ to [\d,]+ parameters"),
    (dict(target_params=30_000, axes=("depth", "heads")), r"axes must name some of"),
    (dict(target_params=30_000, tolerance=0.0), r"tolerance must be in \(0, 1\)"),
    (dict(target_params=30_000, max_blocks_removed=4), r"max_blocks_removed must be in \[0, 3\]"),
    (dict(target_params=30_000, mlp_step=0), "mlp_step must be a positive integer"),
])
def test_bad_budgets_and_grids_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        structured.candidate_shapes(tiny().config, **{**GRID, **kwargs})


def test_bad_search_inputs_are_refused_before_any_work():
    model = tiny()
    with pytest.raises(ValueError, match=r"one score per block, shape \(4,\), got \(3,\)"):
        structured.plan_structured(model.config, structured.StructuredScores(
            scores(model).importance, np.ones(3)), 30_000, **GRID)
    cut = structured.prune_width(model, mlp_channels={0: list(range(32))})
    with pytest.raises(ValueError, match="blocks have equal widths"):
        structured.candidate_shapes(cut.config, 30_000)
    plans = structured.plan_structured(model.config, scores(model), 24_000, tolerance=0.05,
                                       **GRID)
    with pytest.raises(ValueError, match="shortlist must be a positive integer, got 0"):
        structured.search_structured(model, plans, loss_fn=float, distill_fn=float,
                                     shortlist=0)
    with pytest.raises(ValueError, match="at least one plan"):
        structured.search_structured(model, [], loss_fn=float, distill_fn=float)
