"""Masked LoRA: recovery that keeps a pruned model's zeros, and 2:4, exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune import models, oneshot, paths
from jaxprune.losses import distillation_kl
from jaxprune.training import TrainSettings, add_lora, lora, lora_recover, merge_lora
from tests.jit_check import assert_jit_matches_eager

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=64, head_dim=8)
TOKENS = np.random.default_rng(0).integers(0, 64, 4000)


@pytest.fixture(scope="module")
def dense():
    return models.Llama(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def pruned(dense):
    segments = np.random.default_rng(1).integers(0, 64, (4, 16))
    config = oneshot.OneShotConfig(method=oneshot.WANDA, pattern="2:4", sparsity=None)
    return oneshot.prune_oneshot(dense, segments, config, progress=False).model


def kernels(model) -> dict:
    return {p: np.asarray(v) for p, v in paths.leaves_with_paths(nnx.state(model, nnx.Param))}


def kl_to(teacher, student) -> float:
    tokens = jnp.asarray(TOKENS[:256].reshape(8, 32))
    return float(jnp.mean(distillation_kl(student(tokens), teacher(tokens))))


def test_the_adapted_model_starts_as_the_base(pruned):
    tokens = jnp.asarray(TOKENS[:64].reshape(2, 32))
    adapted = add_lora(pruned, rank=4)
    np.testing.assert_array_equal(np.asarray(adapted(tokens)), np.asarray(pruned(tokens)))


def test_recovery_lowers_the_distillation_loss_and_keeps_every_zero_and_2_of_4(dense, pruned):
    settings = TrainSettings(steps=30, batch_size=4, seq_len=32, learning_rate=1e-2,
                             warmup_steps=2, log_every=10, checkpoint_every=100)
    merged, curve = lora_recover(pruned, TOKENS, settings, teacher=dense, rank=4)
    assert kl_to(dense, merged) < 0.9 * kl_to(dense, pruned)
    assert curve[-1][1] < curve[0][1]
    before, after = kernels(pruned), kernels(merged)
    changed = 0
    for target in pruned.prunable_linears():
        old, new = before[target.path], after[target.path]
        np.testing.assert_array_equal(new[old == 0], 0)
        assert np.all((new != 0).T.reshape(new.shape[1], -1, 4).sum(-1) <= 2)
        changed += int(np.any(new != old))
    assert changed == len(pruned.prunable_linears())
    # Only the adapted kernels move: embeddings and norms are the student's.
    for path, value in before.items():
        if not path.endswith("kernel") or "layers" not in path:
            np.testing.assert_array_equal(after[path], value)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), rank=st.integers(1, 6), density=st.floats(0.1, 0.9))
def test_the_merged_kernel_is_zero_wherever_the_base_is(seed, rank, density):
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((16, 12)) * (rng.random((16, 12)) < density)
    layer = nnx.Linear(16, 12, use_bias=False, rngs=nnx.Rngs(0))
    layer.kernel[...] = jnp.asarray(kernel, jnp.float32)
    adapted = lora.MaskedLoraLinear(layer, rank=rank, alpha=2.0 * rank, rngs=nnx.Rngs(seed))
    adapted.lora_b[...] = jnp.asarray(rng.standard_normal((rank, 12)), jnp.float32)
    merged = np.asarray(adapted.merged_kernel())
    np.testing.assert_array_equal(merged[kernel == 0], 0)
    assert np.any(merged[kernel != 0] != kernel[kernel != 0].astype(np.float32))


def test_lora_forward_jit_matches_eager(pruned):
    adapted = add_lora(pruned, rank=2, layers="mlp")
    layer = adapted.layers[0].mlp.up_proj
    layer.lora_b[...] = jnp.ones_like(layer.lora_b[...]) * 0.1
    graphdef, state = nnx.split(adapted)
    forward = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
    assert_jit_matches_eager(forward, state, jnp.asarray(TOKENS[:32].reshape(1, 32)))
    merged = merge_lora(adapted, pruned)
    np.testing.assert_allclose(np.asarray(merged(jnp.asarray(TOKENS[:32].reshape(1, 32)))),
                               np.asarray(adapted(jnp.asarray(TOKENS[:32].reshape(1, 32)))),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(rank=0), ValueError, "lora rank must be >= 1, got 0"),
    (dict(rank=2.5), TypeError, "lora rank must be an integer"),
    (dict(alpha=0.0), ValueError, "lora alpha must be"),
    (dict(layers="cross_attn"), ValueError, "lora layers 'cross_attn' matches no linear"),
    (dict(layers="("), ValueError, "not a valid regular expression"),
])
def test_bad_settings_are_refused(pruned, kwargs, error, message):
    with pytest.raises(error, match=message):
        add_lora(pruned, **kwargs)


def test_prune_recover_quantize_keeps_2_of_4_and_lands_on_the_grid(dense, pruned):
    """The pipeline of docs/quantization.md: 2:4, masked LoRA, then GPTQ keeping the masks."""
    import qwix

    from jaxprune import quant

    settings = TrainSettings(steps=10, batch_size=4, seq_len=32, learning_rate=1e-2,
                             warmup_steps=1, log_every=5, checkpoint_every=100)
    recovered, _ = lora_recover(pruned, TOKENS, settings, teacher=dense, rank=4)
    segments = TOKENS[:256].reshape(8, 32)
    result = oneshot.quantize_model(recovered, segments,
                                    oneshot.GPTQ(quant.QuantSpec(4, 32), blocksize=32),
                                    progress=False)
    state = kernels(result.model)
    for target in pruned.prunable_linears():
        kernel = state[target.path]
        assert np.all((kernel != 0).T.reshape(kernel.shape[1], -1, 4).sum(-1) <= 2)
        np.testing.assert_array_equal(
            np.asarray(qwix.dequantize(result.quantized[target.path])), kernel)
