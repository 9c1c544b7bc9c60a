"""The LM head scored over slices of the vocabulary against a float64 numpy log-softmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import models
from jaxprune.eval.head import vocab_sliced_scores


def _model(tied: bool, dtype, vocab: int = 70, seed: int = 0) -> models.Llama:
    config = models.LlamaConfig(vocab_size=vocab, hidden_size=32, num_layers=1, num_heads=4,
                                num_kv_heads=2, intermediate_size=48, head_dim=8,
                                tie_word_embeddings=tied)
    return models.Llama(config, rngs=nnx.Rngs(seed), param_dtype=dtype)


def _reference(model, h, targets):
    """log p(target) and argmax == target in float64 numpy from the model's own logits."""
    logits = np.asarray(model.head(h), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    target_logp = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    return target_logp, logits.argmax(-1) == targets


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("rows", [16, 1000])  # 16: five slices, the last shifted; 1000: one
def test_sliced_scores_match_a_float64_log_softmax_of_the_heads_logits(tied, dtype, rows):
    model = _model(tied, dtype)
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.standard_normal((3, 5, 32)) * 2, dtype)
    targets = rng.integers(0, 70, (3, 5))
    # Some targets are the arg-max, so ``greedy`` is checked both ways.
    targets[0] = np.asarray(model.head(h)).argmax(-1)[0]
    want_logp, want_greedy = _reference(model, h, targets)
    logp, greedy = vocab_sliced_scores(model, h, jnp.asarray(targets), rows=rows)
    np.testing.assert_allclose(np.asarray(logp), want_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(greedy), want_greedy)
    assert want_greedy.any() and not want_greedy.all()
    jitted = jax.jit(lambda m, h, t: vocab_sliced_scores(m, h, t, rows=rows))
    jit_logp, jit_greedy = jitted(model, h, jnp.asarray(targets))
    np.testing.assert_allclose(np.asarray(jit_logp), np.asarray(logp), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(jit_greedy), np.asarray(greedy))


def test_a_tie_across_slices_goes_to_the_lowest_id_as_argmax_does():
    model = _model(tied=True, dtype=jnp.float32)
    table = np.asarray(model.embed_tokens.embedding[...]).copy()
    table[50] = table[3] = np.abs(table).max() * 40  # the same row in slices 0 and 3 (of 16)
    model.embed_tokens.embedding[...] = jnp.asarray(table)
    h = jnp.asarray(np.random.default_rng(2).standard_normal((1, 4, 32)), jnp.float32)
    norm = np.asarray(model.norm(h))
    h = jnp.where(jnp.asarray(norm @ table[3] > 0)[..., None], h, -h)  # row 3 wins outright
    assert (np.asarray(model.head(h)).argmax(-1) == 3).all()
    _, greedy_low = vocab_sliced_scores(model, h, jnp.full((1, 4), 3), rows=16)
    _, greedy_high = vocab_sliced_scores(model, h, jnp.full((1, 4), 50), rows=16)
    assert np.asarray(greedy_low).all() and not np.asarray(greedy_high).any()


def test_rows_below_one_are_refused():
    with pytest.raises(ValueError, match="rows must be >= 1, got 0"):
        vocab_sliced_scores(_model(True, jnp.float32), jnp.ones((1, 2, 32)),
                            jnp.zeros((1, 2), jnp.int32), rows=0)
