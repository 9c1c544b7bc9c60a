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
    return token_nll(model(batch[:, :-1]), batch[:, 1:])


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative log-likelihood of ``targets`` ``[...]`` under ``logits`` ``[..., vocab]``,
    in float32."""
    logits = logits.astype(jnp.float32)
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - target_logits


def distillation_kl(student_logits: jax.Array, teacher_logits: jax.Array, *,
                    temperature: float = 1.0) -> jax.Array:
    """Forward KL ``KL(teacher || student)`` per position, of temperature-softened logits.

    Scaled by ``temperature ** 2`` so that gradients keep their size as the temperature
    changes (Hinton et al. 2015). Minitron distils with this loss on the logits alone at
    temperature 1.

    Args:
      student_logits: ``[..., vocab]``.
      teacher_logits: ``[..., vocab]``; no gradient flows into them.
      temperature: > 0.

    Returns:
      float32 ``[...]``.

    References:
      Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network";
      Muralidharan et al. 2024 (Minitron), section 3.
    """
    t = temperature
    teacher = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t)
    student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t)
    return jnp.sum(jnp.exp(teacher) * (teacher - student), axis=-1) * t * t
