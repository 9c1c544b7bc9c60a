"""MaskLLM: the candidate patterns, the prior and the soft mask against float64 NumPy written
from the paper, a learning step the same under jit and eagerly, learned masks N:M on the dense
weights through the engine, and bad settings refused before work."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxprune import masks, models, oneshot, paths
from jaxprune.oneshot import maskllm
from tests.jit_check import assert_jit_matches_eager
from tests.oneshot_fields import oneshot_fields

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)


@pytest.mark.parametrize("n,m,count", [(2, 4, 6), (1, 4, 4), (4, 8, 70)])
def test_candidates_are_every_pattern_keeping_n_of_m(n, m, count):
    options = oneshot.candidate_masks(n, m)
    assert options.shape == (count, m)
    assert np.all(options.sum(axis=1) == n)
    assert len({tuple(row) for row in options}) == count


def groups_of(array, m):
    """[in, out] -> rows of m consecutive inputs of each output unit, in float64."""
    return np.asarray(array, np.float64).T.reshape(-1, m)


def test_prior_and_soft_mask_match_the_paper_in_float64():
    rng = np.random.default_rng(0)
    prior = np.zeros((8, 6), bool)
    for out in range(6):
        for start in range(0, 8, 4):
            prior[start + rng.choice(4, 2, replace=False), out] = True
    options = oneshot.candidate_masks(2, 4)
    key = jax.random.key(3)
    logits = np.asarray(maskllm.prior_logits(jnp.asarray(prior), jnp.asarray(options), key, 3.0))
    noise = 0.01 * np.asarray(jax.random.normal(key, logits.shape), np.float64)
    overlap = groups_of(prior, 4) @ options.T.astype(np.float64)
    np.testing.assert_allclose(logits, noise + (overlap - 1) * noise.std() * 3.0, rtol=1e-5,
                               atol=1e-7)
    gumbel = rng.gumbel(size=logits.shape)
    soft = np.asarray(maskllm.soft_mask(jnp.asarray(logits), jnp.asarray(options),
                                        jnp.asarray(gumbel, jnp.float32), 0.7, 150.0, (8, 6)))
    z = (150.0 * logits.astype(np.float64) + gumbel) / 0.7
    choice = np.exp(z - z.max(axis=1, keepdims=True))
    choice /= choice.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(groups_of(soft, 4), choice @ options, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(groups_of(soft, 4).sum(axis=1), 2.0, rtol=1e-5)
    hard = np.asarray(maskllm.hard_mask(jnp.asarray(logits), jnp.asarray(options), (8, 6)))
    np.testing.assert_array_equal(groups_of(hard, 4), options[logits.argmax(axis=1)])


def test_a_learning_step_under_jit_equals_eager():
    one_block = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4,
                                   num_kv_heads=2, intermediate_size=48, head_dim=8)
    model = models.Llama(one_block, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    options = jnp.asarray(oneshot.candidate_masks(2, 4))
    kernel_paths = [p for p, leaf in paths.leaves_with_paths(state)
                    if p.endswith("proj/kernel") and p.startswith("layers/0/mlp")]
    logits = {p: maskllm.prior_logits(jnp.ones(dict(paths.leaves_with_paths(state))[p].shape,
                                               bool), options, jax.random.key(i), 3.0)
              for i, p in enumerate(kernel_paths)}
    settings = oneshot.MaskLLM(steps=5)
    # Plain SGD: Adam divides by the gradient's own size, which magnifies float32 rounding
    # differences of near-zero gradients.
    optimizer = optax.sgd(1.0)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 64, (2, 8)))
    args = (graphdef, optimizer, settings, state, logits, optimizer.init(logits), options,
            tokens, jax.random.key(7), 1)
    assert_jit_matches_eager(maskllm._mask_step, *args, rtol=2e-4, atol=2e-5)


def test_learned_masks_through_the_engine_are_n_of_m_on_the_dense_weights():
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (8, 16))
    fields = oneshot_fields(method="sparsegpt", pattern="2:4", batch_size=2,
                            learn_masks="maskllm", maskllm_steps=20, maskllm_batch_size=2,
                            maskllm_lr=5e-2)
    settings = oneshot.settings_from_config(fields)
    assert settings.learn_masks == oneshot.MaskLLM(steps=20, lr=5e-2, batch_size=2)
    result = oneshot.prune_oneshot(model, segments, settings, progress=False)
    assert len(result.mask_losses) == 20
    assert np.mean(result.mask_losses[-5:]) < np.mean(result.mask_losses[:5])
    dense = dict(paths.leaves_with_paths(nnx.state(model)))
    pruned = dict(paths.leaves_with_paths(nnx.state(result.model)))
    learned = {p: np.asarray(m) for p, m in paths.leaves_with_paths(result.masks)
               if m is not None}
    assert len(learned) == 7 * CONFIG.num_layers
    for path, keep in learned.items():
        assert masks.is_n_of_m(jnp.asarray(keep), 2, 4), path
        np.testing.assert_array_equal(pruned[path], np.where(keep, dense[path], 0))
    assert any(row["maskllm_changed"] > 0 for row in result.layers)


@pytest.mark.parametrize("overrides,message", [
    ({"maskllm_steps": 0}, "config.learn_masks='maskllm': maskllm_steps must be >= 1, got 0"),
    ({"maskllm_lr": -1.0}, "maskllm_lr must be a finite number > 0, got -1.0"),
    ({"maskllm_prior_strength": float("inf")}, "maskllm_prior_strength must be a finite"),
])
def test_bad_maskllm_settings_are_refused_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        oneshot.settings_from_config(oneshot_fields(pattern="2:4", learn_masks="maskllm",
                                                    **overrides))


def test_learned_masks_need_an_n_of_m_pattern_before_work():
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (4, 16))
    fields = oneshot_fields(pattern="per_output", learn_masks="maskllm")
    with pytest.raises(ValueError, match="pattern must be N:M .* got 'per_output'"):
        oneshot.prune_oneshot(model, segments, oneshot.settings_from_config(fields),
                              progress=False)
