"""Library-level structured plans, criteria values and the distillation loop (the jobs and the
notebooks call these)."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxprune import models, structured, training

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=4, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)


def test_keep_top_keeps_the_highest_and_the_lower_index_on_ties():
    assert structured.keep_top(np.array([0.3, 0.9, 0.3, 0.1, 0.9]), 3) == [0, 1, 4]
    with pytest.raises(ValueError, match=r"count must be an integer in \[0, 5\]"):
        structured.keep_top(np.zeros(5), 6)


def test_plan_width_keeps_heads_within_their_groups():
    rng = np.random.default_rng(0)
    importance = structured.Importance(
        heads=[rng.random(4) for _ in range(4)], kv_groups=[rng.random(2) for _ in range(4)],
        mlp=[rng.random(48) for _ in range(4)], hidden=rng.random(32))
    plan = structured.plan_width(CONFIG, importance, heads_per_group=1, mlp_channels=10)
    for block, heads in plan.heads.items():
        scores = importance.heads[block]
        # One head per key/value group (heads 0-1 share group 0, heads 2-3 group 1): the best.
        assert heads == [int(np.argmax(scores[:2])), 2 + int(np.argmax(scores[2:]))]
        assert plan.mlp_channels[block] == sorted(np.argsort(-importance.mlp[block])[:10])
    assert plan.hidden is None
    student = structured.cut_width(models.Llama(CONFIG, rngs=nnx.Rngs(0)), plan)
    assert student.config.num_heads == (2,) * 4 and student.config.intermediate_size == (10,) * 4


def test_plan_depth_drops_the_lowest_the_lowest_run_or_fuses_the_closest_pairs():
    scores = np.array([0.5, 0.1, 0.4, 0.2])
    assert structured.plan_depth(scores, 2) == structured.DepthPlan(remove=(1, 3))
    runs = np.array([0.3, 0.1, 0.2])  # angular distances of runs of 2 starting at 0, 1, 2
    assert structured.plan_depth(runs, 2, contiguous=True).remove == (1, 2)
    assert structured.plan_depth(runs, 1, fuse=True).fuse == (1,)
    model = models.Llama(CONFIG, rngs=nnx.Rngs(0))
    assert structured.cut_depth(model, structured.DepthPlan(remove=(1, 3))).config.num_layers == 2


def test_plan_depth_folds_the_lowest_blocks_that_have_a_kept_block_below():
    scores = np.array([0.1, 0.15, 0.2, 0.9, 0.3])  # block 0 lowest, but nothing lies below it
    assert structured.plan_depth(scores, 2, fold=True) == structured.DepthPlan(fold=(1, 2))
    # A method that never fuses block 0 needs the kept block at 1 or above.
    assert structured.plan_depth(scores, 2, fold=True, lowest=1).fold == (2, 4)
    assert structured.plan_depth(scores, 4, fold=True).fold == (1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"blocks must be an integer in \[0, 3\] \(the blocks "
                                         r"above block 1\), got 4"):
        structured.plan_depth(scores, 4, fold=True, lowest=1)
    criterion = structured.FUSE_CRITERIA["block_influence"]
    assert criterion.fold and criterion.scores_key(4) == "block_influence"
    model = models.Llama(CONFIG, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="folds blocks or removes and fuses them, not both"):
        structured.cut_depth(model, structured.DepthPlan(remove=(1,), fold=(3,)))


def test_criteria_are_registered_values():
    criterion = structured.DEPTH_CRITERIA["angular"]
    assert criterion.runs and criterion.scores_key(3) == "angular3"
    assert structured.WIDTH_CRITERIA["taylor"].max_batch_size == 2
    assert structured.WIDTH_CRITERIA["activation"].options == ("seq_agg", "batch_agg")


def test_distill_lowers_the_kl_and_leaves_the_teacher_alone():
    teacher = models.Llama(CONFIG, rngs=nnx.Rngs(0))
    student = structured.cut_depth(teacher, structured.DepthPlan(remove=(3,)))
    tokens = np.random.default_rng(1).integers(0, 64, 4000)
    before = nnx.state(teacher, nnx.Param)
    settings = training.TrainSettings(steps=30, batch_size=4, seq_len=16, learning_rate=3e-3,
                                      warmup_steps=2, log_every=10)
    distilled, curve = training.distill(student, teacher, tokens, settings)
    assert [step for step, _ in curve] == [10, 20, 30] and curve[-1][1] < curve[0][1]
    assert distilled.config.num_layers == 3
    after = nnx.state(teacher, nnx.Param)
    assert all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(before), jax.tree.leaves(after), strict=True))


def test_sparse_training_takes_only_a_mask_rule():
    with pytest.raises(TypeError, match="rule must be a MaskRule"):
        training.sparse_training(optax.sgd(0.1), "rigl")
