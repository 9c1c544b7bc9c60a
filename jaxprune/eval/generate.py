"""Greedy generation, for smoke checks of a loaded or pruned model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


# Module-level with the graph static, so a model and its pruned copies (one structure) share
# the compiled program.
@functools.partial(jax.jit, static_argnums=0)
def _next_token(graphdef, state, ids, position):
    logits = nnx.merge(graphdef, state)(ids)
    return jnp.argmax(logits[0, position - 1])


def greedy_generate(model, tokenizer, prompt: str, *, max_new_tokens: int = 16,
                    add_bos: bool = False, stop_at_eos: bool = True) -> str:
    """Continues ``prompt`` with the most likely token, ``max_new_tokens`` times.

    The whole sequence is recomputed at every step on one fixed-length buffer (causal attention
    makes the unused tail irrelevant), so the forward pass compiles once. Fine for a few dozen
    tokens; not a serving loop.

    Args:
      model: a causal LM mapping ``[B, T]`` ids to logits.
      tokenizer: a ``jaxprune.models.Tokenizer``.
      prompt: the text to continue.
      max_new_tokens: number of tokens to add, >= 1.
      add_bos: prepend the BOS token.
      stop_at_eos: stop early at the EOS token.

    Returns:
      The prompt followed by the generated text.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prompt_ids = tokenizer.encode(prompt, add_bos=add_bos)
    if prompt_ids.size == 0:
        raise ValueError("prompt must not be empty")
    buffer = np.zeros((1, prompt_ids.size + max_new_tokens), np.int32)
    buffer[0, : prompt_ids.size] = prompt_ids
    graphdef, state = nnx.split(model)
    length = prompt_ids.size
    for _ in range(max_new_tokens):
        token = int(_next_token(graphdef, state, jnp.asarray(buffer), length))
        buffer[0, length] = token
        length += 1
        if stop_at_eos and token == tokenizer.eos_id:
            break
    generated = buffer[0, (1 if add_bos else 0):length]
    return tokenizer.decode(generated)
