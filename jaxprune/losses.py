"""Language-modelling loss shared by evaluation and gradient-based criteria."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token_nll(model, batch: jax.Array) -> jax.Array:
    """Negative log-likelihood of each next token of ``batch`` ``[B, L]``: ``[B, L - 1]``.

    Args:
      model: a callable mapping ids ``[B, T]`` to logits ``[B, T, vocab]``.
      batch: token ids; position ``t`` is predicted from positions ``< t``.

    Returns:
      float32 NLL of tokens ``1 .. L - 1``.
    """
    logits = model(batch[:, :-1]).astype(jnp.float32)
    targets = batch[:, 1:]
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - target_logits
