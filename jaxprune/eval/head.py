"""The LM head scored over slices of the vocabulary, for models streamed from disk.

A head of a large vocabulary is the biggest single weight of most checkpoints (Llama 3's
128,256 x 4,096 at 8B). Scoring it in one product needs every logit of a batch at once, and on
a CPU, whose XLA backend has no bfloat16 matrix product, a float32 copy of the whole weight
(the peak of a streamed bfloat16 run: 1 GB of its 2.2 GB at 1.2B parameters). Here the
vocabulary is taken ``rows`` entries at a time, the softmax's normaliser and the arg-max are
carried across slices (the online logsumexp), and only the target's logit is kept, so memory
holds one slice's logits and its weight.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["HEAD_ROWS", "vocab_sliced_scores"]

# Vocabulary entries per slice: a float32 slice of 8,192 x 4,096 weights is 134 MB.
HEAD_ROWS = 8192


class _HeadProduct(NamedTuple):
    """What the head's product needs besides its weight, hashable (a static argument): whether
    the head is the tied embedding, and its module's dtype promotion, dtype, precision and dot
    (``nnx.Embed.attend``, ``nnx.Linear``)."""

    tied: bool
    promote: Callable
    dtype: Any
    precision: Any = None
    dot_general: Callable | None = None


def _head_product(model) -> _HeadProduct:
    if model.config.tie_word_embeddings:
        embed = model.embed_tokens
        return _HeadProduct(True, embed.promote_dtype, embed.dtype)
    head = model.lm_head
    return _HeadProduct(False, head.promote_dtype, head.dtype, head.precision, head.dot_general)


def _slice_logits(product: _HeadProduct, hidden: jax.Array, weight: jax.Array) -> jax.Array:
    if product.tied:  # weight: rows of the embedding table
        query, weight = product.promote((hidden, weight), dtype=product.dtype)
        return jnp.dot(query, weight.T).astype(jnp.float32)
    # weight: columns of the kernel
    query, weight, _ = product.promote((hidden, weight, None), dtype=product.dtype)
    return product.dot_general(query, weight, (((query.ndim - 1,), (0,)), ((), ())),
                               precision=product.precision).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def _add_slice(product: _HeadProduct, carry: tuple, hidden: jax.Array, weight: jax.Array,
               start: jax.Array, targets: jax.Array) -> tuple:
    """The running maximum, sum of exponentials, target logit and arg-max after one slice."""
    peak, total, target_logit, best_id = carry
    logits = _slice_logits(product, hidden, weight)
    slice_peak = jnp.max(logits, axis=-1)
    new_peak = jnp.maximum(peak, slice_peak)
    total = (total * jnp.exp(peak - new_peak)
             + jnp.sum(jnp.exp(logits - new_peak[..., None]), axis=-1))
    size = logits.shape[-1]
    offset = jnp.clip(targets - start, 0, size - 1)
    picked = jnp.take_along_axis(logits, offset[..., None], axis=-1)[..., 0]
    target_logit = jnp.where((targets >= start) & (targets < start + size), picked,
                             target_logit)
    # Strictly greater: an earlier slice keeps a tie, as argmax keeps the lowest id.
    best_id = jnp.where(slice_peak > peak, start + jnp.argmax(logits, axis=-1), best_id)
    return new_peak, total, target_logit, best_id


def vocab_sliced_scores(model, h: jax.Array, targets: jax.Array, *,
                        rows: int = HEAD_ROWS) -> tuple[jax.Array, jax.Array]:
    """Log-probability of each target token, and whether it is the arg-max, from the last
    hidden states, the vocabulary scored ``rows`` entries at a time.

    Equal to ``log_softmax(model.head(h))`` at the targets and ``argmax == targets`` (ties go
    to the lowest id, as ``jnp.argmax``) up to float32 rounding of the normaliser. Called
    eagerly, each slice is its own compiled step, and memory holds one slice's logits and
    float32 weights. Under an outer ``jit`` the result is the same, but XLA schedules the
    slices as it likes (on a CPU it converts all of a bfloat16 head to float32 at once).

    Args:
      model: a ``Llama`` or a ``LazyModel``'s shell: its final ``norm`` and its head (the tied
        embedding or ``lm_head``).
      h: residual stream before the final norm, ``[..., hidden]``.
      targets: token ids ``[...]``.
      rows: vocabulary entries per slice (the last one may be shorter).

    Returns:
      ``(target_logp, greedy)``, float32 and bool arrays of ``targets``' shape.

    Raises:
      ValueError: for ``rows`` < 1.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    vocab = model.config.vocab_size
    product = _head_product(model)
    weight = (model.embed_tokens.embedding if product.tied else model.lm_head.kernel)[...]
    hidden = model.norm(h)
    shape = targets.shape
    carry = (jnp.full(shape, -jnp.inf), jnp.zeros(shape), jnp.zeros(shape),
             jnp.zeros(shape, jnp.int32))
    for start in range(0, vocab, rows):
        piece = weight[start:start + rows] if product.tied else weight[:, start:start + rows]
        carry = _add_slice(product, carry, hidden, piece, jnp.int32(start), targets)
    peak, total, target_logit, best_id = carry
    return target_logit - (peak + jnp.log(total)), best_id == targets
