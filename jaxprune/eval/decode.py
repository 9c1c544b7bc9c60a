"""Greedy decoding with a key/value cache: one token per step, the regime of serving.

``greedy_generate`` recomputes the whole sequence every step (fine for smoke checks). Here the
prompt fills a cache of keys and values once (prefill), and every later step feeds one token
per sequence, so each linear layer multiplies ``[batch, hidden]`` activations: the decode
regime the 2:4 kernels target. Works on any ``jaxprune.models.Llama``, with dense, masked or
``SparseLinear`` layers.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.models.llama import visible_keys


def init_cache(model, batch: int, max_len: int, dtype=None) -> list:
    """Zeroed keys and values ``[batch, max_len, kv_heads, head_dim]`` for every block."""
    dtype = dtype or model.embed_tokens.embedding[...].dtype
    shape = lambda block: (batch, max_len, block.self_attn.num_kv_heads, model.config.head_dim)  # noqa: E731
    return [(jnp.zeros(shape(b), dtype), jnp.zeros(shape(b), dtype)) for b in model.layers]


def _attend(attn, x, cache, offset, cos, sin):
    """One block's attention over the cache, after writing this call's keys and values."""
    batch, seq, _ = x.shape
    q, k, v = attn.project(x, cos, sin)
    keys = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, offset, 0, 0))
    values = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, offset, 0, 0))
    positions = offset + jnp.arange(seq)
    mask = visible_keys(positions[:, None] - jnp.arange(keys.shape[1])[None, :], attn.window)
    out = jax.nn.dot_product_attention(q, keys.astype(q.dtype), values.astype(q.dtype),
                                       mask=mask[None, None], scale=attn.scale)
    return attn.o_proj(out.reshape(batch, seq, -1)), (keys, values)


def forward_with_cache(model, tokens: jax.Array, cache: list, offset) -> tuple:
    """Logits ``[batch, seq, vocab]`` of ``tokens`` at positions ``offset ..``, and the cache
    with their keys and values written. ``offset`` may be traced (one compilation per
    ``seq``)."""
    h = model.embed(tokens)
    positions = (offset + jnp.arange(tokens.shape[1]))[None, :]
    cos, sin = model.rope_at(positions)
    new_cache = []
    for block, layer_cache in zip(model.layers, cache, strict=True):
        attended, layer_cache = _attend(block.self_attn, block.input_layernorm(h), layer_cache,
                                        offset, cos, sin)
        h = block.add_attention(h, attended)
        h = block.add_mlp(h, block.mlp(block.mlp_input(h)))
        new_cache.append(layer_cache)
    return model.head(h), new_cache


# Module-level with the graph static: every call on a model of one structure shares it.
@functools.partial(jax.jit, static_argnums=0)
def _greedy_step(graphdef, state, tokens, cache, offset):
    logits, cache = forward_with_cache(nnx.merge(graphdef, state), tokens, cache, offset)
    return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), cache


def greedy_decode(model, prompts: np.ndarray, new_tokens: int) -> tuple[np.ndarray, dict]:
    """Greedy continuation of a batch of prompts of equal length, with a key/value cache.

    Args:
      model: a ``jaxprune.models.Llama`` (any linear layers).
      prompts: token ids ``[batch, prompt_len]``.
      new_tokens: tokens to generate per prompt, >= 1.

    Returns:
      ``(tokens, timings)``: ``[batch, prompt_len + new_tokens]`` ids, and the prefill seconds,
      the decode seconds and decode tokens/s (batch x steps over the decode time; the first
      decode step, which compiles, is run before timing and not counted).

    Raises:
      ValueError: for ``new_tokens < 1`` or prompts that are not ``[batch, len]``.
    """
    prompts = np.asarray(prompts, np.int32)
    if new_tokens < 1 or prompts.ndim != 2 or prompts.shape[1] < 1:
        raise ValueError(f"need prompts [batch, len >= 1] and new_tokens >= 1, got "
                         f"{prompts.shape} and {new_tokens}")
    batch, length = prompts.shape
    graphdef, state = nnx.split(model)

    cache = init_cache(model, batch, length + new_tokens)
    start = time.perf_counter()
    token, cache = _greedy_step(graphdef, state, jnp.asarray(prompts), cache, 0)
    out = [jax.block_until_ready(token)]
    prefill = time.perf_counter() - start
    if new_tokens > 1:  # compile the one-token step outside the timed loop
        token, cache = _greedy_step(graphdef, state, token[:, None], cache, length)
        out.append(token)
    start = time.perf_counter()
    for i in range(len(out), new_tokens):
        token, cache = _greedy_step(graphdef, state, token[:, None], cache, length + i - 1)
        out.append(token)
    jax.block_until_ready(token)
    seconds = time.perf_counter() - start
    steps = max(len(out) - 2, 0)  # the prefill and the compiling step are not timed
    tokens = np.concatenate([prompts, np.stack([np.asarray(t) for t in out], axis=1)], axis=1)
    return tokens, {"prefill_seconds": prefill, "decode_seconds": seconds, "decode_steps": steps,
                    "decode_tokens_per_second": batch * steps / seconds if steps > 0 else None}
