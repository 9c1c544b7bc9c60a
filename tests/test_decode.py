"""Greedy decoding with a key/value cache against full recomputation."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune import kernels, models
from jaxprune.eval import forward_with_cache, greedy_decode, greedy_generate, init_cache


def test_cached_logits_equal_the_full_forward_at_every_position():
    model, tokenizer = models.load("tiny-llama")
    tokens = jnp.asarray(np.stack([tokenizer.encode("Key/value caches"),
                                   tokenizer.encode("save recomputing")]))
    full = np.asarray(model(tokens))
    cache = init_cache(model, 2, tokens.shape[1] + 3)
    prefix, cache = forward_with_cache(model, tokens[:, :10], cache, 0)
    np.testing.assert_allclose(np.asarray(prefix), full[:, :10], rtol=1e-5, atol=1e-5)
    for position in range(10, tokens.shape[1]):  # then one token at a time
        logits, cache = forward_with_cache(model, tokens[:, position:position + 1], cache,
                                           position)
        np.testing.assert_allclose(np.asarray(logits[:, 0]), full[:, position], rtol=1e-5,
                                   atol=1e-5)


def test_greedy_decode_continues_like_full_recomputation_dense_and_2_4():
    model, tokenizer = models.load("tiny-llama")
    from flax import nnx

    state = nnx.state(model, nnx.Param)
    nnx.update(model, jp.apply_masks(state, jp.prune(state, jp.magnitude, pattern="2:4")))
    prompt = "The kernels decode"
    ids = tokenizer.encode(prompt)
    expected = greedy_generate(model, tokenizer, prompt, max_new_tokens=6, stop_at_eos=False)
    tokens, timings = greedy_decode(model, ids[None], 6)
    assert tokenizer.decode(tokens[0]) == expected
    assert timings["decode_steps"] == 4 and timings["decode_tokens_per_second"] > 0
    sparse = kernels.sparsify_llama(model, interpret=True)
    assert np.array_equal(greedy_decode(sparse, ids[None], 6)[0], tokens)
    with pytest.raises(ValueError, match="new_tokens >= 1"):
        greedy_decode(model, ids[None], 0)
