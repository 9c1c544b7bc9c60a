"""Tiny random models of each supported family, for tests that run every job on every family."""

import jax
from flax import nnx

from jaxprune import models, paths

LLAMA3_ROPE = models.RopeScaling("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=8)
GEMMA3 = dict(qk_norm=True, hidden_act="gelu_tanh", norm_plus_one=True, sandwich_norms=True,
              scale_embeddings=True, query_pre_attn_scalar=24.0, rope_local_theta=300.0,
              attention_windows=(5, None), tie_word_embeddings=True)
# Each family's fields on top of BASE; windows shorter than the test sequences.
FAMILIES = {
    "llama3.2": dict(rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, tie_word_embeddings=True),
    "mistral": dict(attention_windows=5),
    "qwen2": dict(attention_bias=True),
    "qwen3": dict(qk_norm=True, attention_windows=(None, 5)),
    "gemma3": GEMMA3,
}
BASE = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                          num_kv_heads=2, intermediate_size=48, head_dim=8)


def tiny_model(family: str, seed: int = 0) -> models.Llama:
    """A random model of ``family`` whose norm scales and biases are random too (ones or zeros
    would hide a norm or bias that a job drops or misplaces)."""
    model = models.Llama(BASE.replace(**FAMILIES[family]), rngs=nnx.Rngs(seed))
    state = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 100), 64))

    def randomize(path: str, leaf):
        if path.endswith(("scale", "bias")):
            return leaf + 0.3 * jax.random.normal(next(keys), leaf.shape, leaf.dtype)
        return leaf

    nnx.update(model, paths.map_with_path_str(randomize, state))
    return model
