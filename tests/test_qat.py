"""Quantization-aware training through qwix's fake quantization: the forward pass sees exactly
the round-to-nearest grid, gradients flow straight through, the trained weights go back."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import models, oneshot, quant, training

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=64, head_dim=8)
TOKENS = np.random.default_rng(0).integers(0, 64, (2, 16))


@pytest.fixture(scope="module")
def tiny():
    return models.Llama(CONFIG, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("spec", [quant.QuantSpec(4, 16, True), quant.QuantSpec(4, 0, True),
                                  quant.QuantSpec(8, 16, False)], ids=lambda s: s.label)
def test_the_forward_pass_sees_the_round_to_nearest_grid(tiny, spec):
    aware = training.quantization_aware(tiny, spec, TOKENS)
    rounded = oneshot.quantize_model(tiny, TOKENS, oneshot.RoundToNearest(spec),
                                     progress=False).model
    np.testing.assert_array_equal(np.asarray(aware(jnp.asarray(TOKENS))),
                                  np.asarray(rounded(jnp.asarray(TOKENS))))
    assert not np.array_equal(np.asarray(aware(jnp.asarray(TOKENS))),
                              np.asarray(tiny(jnp.asarray(TOKENS))))


def test_gradients_flow_through_and_the_trained_weights_go_back(tiny):
    aware = training.quantization_aware(tiny, quant.QuantSpec(4, 16, True), TOKENS)
    graphdef, params, rest = nnx.split(aware, nnx.Param, ...)

    def loss(p):
        return jnp.mean(nnx.merge(graphdef, p, rest)(jnp.asarray(TOKENS)) ** 2)

    grads = jax.grad(loss)(params)
    stepped = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    kernel_grad = grads["layers"][0]["mlp"]["up_proj"]["kernel"][...]
    assert float(jnp.abs(kernel_grad).max()) > 0  # straight through the rounding
    trained = nnx.merge(graphdef, stepped, rest)
    plain = training.plain_model(trained, tiny)
    assert type(plain) is type(tiny)
    np.testing.assert_array_equal(np.asarray(plain.layers[0].mlp.up_proj.kernel[...]),
                                  np.asarray(stepped["layers"][0]["mlp"]["up_proj"]["kernel"][
                                      ...]))
