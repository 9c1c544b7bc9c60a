"""Every job on every family: one-shot pruning (every method, N:M, OWL), structured surgery,
distillation, sparse training and evaluation, on tiny random Llama 3.2 (llama3 RoPE, tied),
Mistral (windows), Qwen2 (q/k/v biases), Qwen3 (q/k norms) and Gemma 3 models. Parity with
transformers, family by family, and the exports of pruned and cut models are in
tests/test_llama_parity.py; the cached decoder and the zero-shot scorer have their own
per-family tests (test_decode.py, test_zeroshot.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune as jp
from jaxprune import oneshot, structured, training
from jaxprune.eval import perplexity
from tests.families import FAMILIES, tiny_model
from tests.test_oneshot import settings

SEGMENTS = np.random.default_rng(0).integers(0, 64, (4, 12))


def kernel_masks_hold(result, pattern):
    """Every pruned layer's weights are zero where its mask is, and the masks follow the
    pattern; 14 layers (7 per block) are masked."""
    masked = 0
    for (path, weight), (_, mask) in zip(
            jp.paths.leaves_with_paths(nnx.state(result.model)),
            jp.paths.leaves_with_paths(result.masks, keep_none=True), strict=True):
        if mask is not None:
            masked += 1
            assert np.all(np.asarray(weight)[~np.asarray(mask)] == 0), path
    assert masked == 14
    if ":" in pattern:
        jp.check_n_of_m_masks(result.masks, pattern)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_shot_methods_patterns_and_owl(family):
    model = tiny_model(family)
    # Calibration (each block's inputs, Gram matrices, OWL's outlier ratios) is what differs by
    # family; the methods' scores and solves see only a kernel and its statistics. The Fisher
    # variant of OBD also back-propagates through the model: on Gemma, through its extra norms.
    runs = [("sparsegpt", "2:4", "uniform")]
    if family == "gemma3":
        runs += [("wanda", "per_output", "owl"), ("obd_fisher", "4:8", "uniform")]
    for method, pattern, allocation in runs:
        config = settings(method=method, pattern=pattern, allocation=allocation, sparsity=0.5,
                          batch_size=2, blocksize=16)
        result = oneshot.prune_oneshot(model, SEGMENTS, config, progress=False)
        kernel_masks_hold(result, pattern)
        assert bool(jnp.all(jnp.isfinite(result.model(jnp.asarray(SEGMENTS)))))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_structured_cuts_by_every_criterion_kind(family):
    model = tiny_model(family)
    importance = structured.activation_importance(model, SEGMENTS, batch_size=2)
    plan = structured.plan_width(model.config, importance, heads_per_group=1, mlp_channels=40,
                                 hidden=24)
    cut = structured.cut_width(model, plan)
    assert cut.config.num_heads == (2, 2) and cut.config.hidden_size == 24
    depth = structured.cut_depth(model, structured.plan_depth(
        structured.block_influence(model, SEGMENTS, batch_size=2), 1))
    fused = structured.fuse_blocks(model, 0)
    for net in (cut, depth, fused):
        count = sum(x.size for x in jax.tree.leaves(nnx.state(net, nnx.Param)))
        assert count == net.config.num_params()
        assert np.isfinite(perplexity(net, SEGMENTS.ravel(), window=12, progress=False,
                                      bos_id=1).perplexity)
    # The kept block keeps its own window (and so, for Gemma, its own RoPE table).
    removed = depth.config.num_layers == 1 and set(range(2)) - set(
        [b for b in range(2) if depth.config.attention_windows[0] ==
         model.config.attention_windows[b]])
    assert depth.config.num_layers == 1 and removed is not None


# The trainer sees a model only through its forward pass and parameter tree: Gemma 3, the
# family furthest from Llama, stands for the others here (the suite's time is short).
@pytest.mark.parametrize("family", ["gemma3"])
def test_distillation_and_sparse_training_steps(family):
    model = tiny_model(family)
    tokens = np.random.default_rng(1).integers(0, 64, 400)
    settings = training.TrainSettings(steps=3, batch_size=2, seq_len=12, learning_rate=1e-2,
                                      warmup_steps=0, log_every=1)
    student = structured.remove_blocks(model, [1])
    distilled, curve = training.distill(student, model, tokens, settings)
    assert len(curve) == 3 and all(np.isfinite(loss) for _, loss in curve)
    rule = training.rule_from_config("gradual", _sparsity_section())
    trainer = training.Trainer(model, tokens, settings, rule=rule)
    curve = trainer.run(until=settings.steps)
    assert len(curve) == 3 and trainer.sparsity() == pytest.approx(0.5, abs=0.01)


def _sparsity_section():
    import ml_collections

    return ml_collections.ConfigDict({"final": 0.5, "begin": 0, "end": 2, "update_every": 1,
                                      "drop_fraction": 0.3, "allocation": "uniform",
                                      "pattern": "unstructured"})
