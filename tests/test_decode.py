"""Greedy decoding with a key/value cache against full recomputation."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune as jp
from jaxprune import models
from jaxprune.eval import forward_with_cache, greedy_decode, greedy_generate, init_cache
from tests.families import GEMMA3


@pytest.mark.parametrize("variant", ["llama", "qwen3-rope-window", "gemma3"])
def test_cached_logits_equal_the_full_forward_at_every_position(variant):
    model, tokenizer = models.load("tiny-llama")
    if variant == "gemma3":  # sandwich norms, and block 0's window with its own RoPE table
        model = models.Llama(model.config.replace(**{**GEMMA3, "attention_windows": (5, None)}),
                             rngs=nnx.Rngs(2))
    elif variant != "llama":  # q/k norms, a scaled RoPE and a window go through the cache too
        scaling = models.RopeScaling("llama3", factor=8.0, low_freq_factor=1.0,
                                     high_freq_factor=4.0, original_max_position_embeddings=8)
        model = models.Llama(model.config.replace(qk_norm=True, rope_scaling=scaling,
                                                  attention_windows=(5, None)),
                             rngs=nnx.Rngs(1))
    tokens = jnp.asarray(np.stack([tokenizer.encode("Key/value caches"),
                                   tokenizer.encode("save recomputing")]))
    full = np.asarray(model(tokens))
    cache = init_cache(model, 2, tokens.shape[1] + 3)
    prefix, cache = forward_with_cache(model, tokens[:, :10], cache, 0)  # eagerly
    np.testing.assert_allclose(np.asarray(prefix), full[:, :10], rtol=1e-5, atol=1e-5)
    step = nnx.jit(forward_with_cache)  # as decoding runs it: one program, traced position
    for position in range(10, tokens.shape[1]):  # then one token at a time
        logits, cache = step(model, tokens[:, position:position + 1], cache,
                             jnp.asarray(position))
        np.testing.assert_allclose(np.asarray(logits[:, 0]), full[:, position], rtol=1e-5,
                                   atol=1e-5)


def test_greedy_decode_continues_like_full_recomputation_of_a_2_4_model():
    model, tokenizer = models.load("tiny-llama")
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jp.apply_masks(state, jp.prune(state, jp.magnitude, pattern="2:4")))
    prompt = "The kernels decode"
    ids = tokenizer.encode(prompt)
    expected = greedy_generate(model, tokenizer, prompt, max_new_tokens=6, stop_at_eos=False)
    tokens, timings = greedy_decode(model, ids[None], 6)
    assert tokenizer.decode(tokens[0]) == expected
    assert timings["decode_steps"] == 4 and timings["decode_tokens_per_second"] > 0
    # Through the 2:4 kernels the same tokens come out: tests/test_kernels.py (logits and
    # greedy_generate) and the GPU script's smoke run (greedy_decode, a batch of 3).
    with pytest.raises(ValueError, match="new_tokens >= 1"):
        greedy_decode(model, ids[None], 0)
