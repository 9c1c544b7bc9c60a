"""Log-likelihood of continuations, as lm-evaluation-harness's ``loglikelihood`` requests.

A request ``(context, continuation)`` is tokenized as the harness does: trailing whitespace
of the context moves to the continuation, the continuation's tokens are those of
``context + continuation`` after the context's own tokens, and an empty context is replaced
by the end-of-text token. The model sees ``(context + continuation)[:-1]``, truncated from the
left to ``max_length`` tokens, and the result is the summed log-probability of the
continuation's tokens and whether each of them is the argmax (``is_greedy``).

Requests are scored longest first in batches padded on the right (causal attention keeps
padding from touching real positions) to a few length buckets, one compiled program per
bucket; only the continuation's positions go through the LM head.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.eval.tasks import Request


@dataclasses.dataclass(frozen=True)
class TokenizedRequest:
    """A request's context and continuation token ids (1-D int32)."""

    context: np.ndarray
    continuation: np.ndarray


@dataclasses.dataclass(frozen=True)
class Score:
    """A continuation's summed log-probability and whether greedy decoding would produce it."""

    loglikelihood: float
    is_greedy: bool


def encode_request(tokenizer, request: Request) -> TokenizedRequest:
    """Token ids of a request, split where the harness splits them.

    Raises:
      ValueError: when the continuation has no tokens of its own, or the context is empty and
        the tokenizer has no end-of-text token.
    """
    context, continuation = request.context, request.continuation
    if not context:
        if tokenizer.eos_id is None:
            raise ValueError("a request with an empty context needs the tokenizer's end-of-text "
                             "token, and this tokenizer has none")
        pair = TokenizedRequest(np.asarray([tokenizer.eos_id], np.int32),
                                np.asarray(tokenizer.encode(continuation), np.int32))
    else:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = np.asarray(tokenizer.encode(context + continuation), np.int32)
        own = np.asarray(tokenizer.encode(context), np.int32)
        pair = TokenizedRequest(own, whole[len(own):])
    if pair.continuation.size == 0:
        raise ValueError(f"the continuation {request.continuation!r} has no tokens of its own "
                         f"after the context {request.context[-40:]!r}")
    return pair


def length_bucket(n: int, smallest: int = 8) -> int:
    """``n`` rounded up to the next of smallest * 2**k or smallest * 1.5 * 2**k: at most two
    compiled shapes per doubling of the length."""
    bucket = smallest
    while bucket < n:
        bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket * 4 // 3
    return bucket


def _continuation_scores_fn(model, tokens, positions, targets, valid):
    h = model.embed(tokens)
    cos, sin = model.rope(tokens.shape[1])
    for layer in model.layers:
        h = layer(h, cos, sin)
    picked = jnp.take_along_axis(h, positions[..., None], axis=1)  # [B, C, hidden]
    logits = model.head(picked).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    target_logp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    sums = jnp.sum(jnp.where(valid, target_logp, 0.0), axis=-1)
    greedy = jnp.all(jnp.where(valid, jnp.argmax(logits, axis=-1) == targets, True), axis=-1)
    return sums, greedy


# Module-level with the graph static, so every model of one structure shares the programs.
@functools.partial(jax.jit, static_argnums=0)
def _continuation_scores(graphdef, state, tokens, positions, targets, valid):
    return _continuation_scores_fn(nnx.merge(graphdef, state), tokens, positions, targets,
                                   valid)


def _model_inputs(pair: TokenizedRequest, max_length: int) -> tuple[np.ndarray, int]:
    whole = np.concatenate([pair.context, pair.continuation])
    if pair.continuation.size > max_length:
        raise ValueError(f"a continuation of {pair.continuation.size} tokens does not fit "
                         f"max_length={max_length}")
    return whole[-(max_length + 1):][:-1], pair.continuation.size


def _batch_arrays(pairs, max_length, rows):
    inputs = [_model_inputs(p, max_length) for p in pairs]
    length = length_bucket(max(len(x) for x, _ in inputs), 16)
    width = length_bucket(max(c for _, c in inputs))
    tokens = np.zeros((rows, length), np.int32)
    positions = np.zeros((rows, width), np.int32)
    targets = np.zeros((rows, width), np.int32)
    valid = np.zeros((rows, width), bool)
    for i, ((x, count), pair) in enumerate(zip(inputs, pairs, strict=True)):
        tokens[i, :len(x)] = x
        # The logits at input position p predict the token at p + 1.
        positions[i, :count] = np.arange(len(x) - count, len(x))
        targets[i, :count] = pair.continuation
        valid[i, :count] = True
    return tokens, positions, targets, valid


def score_requests(model, pairs: list[TokenizedRequest], *, batch_size: int = 8,
                   max_length: int = 2048, progress: bool = True) -> list[Score]:
    """Scores tokenized requests with a causal LM.

    Args:
      model: a jaxprune decoder (``embed``, ``rope``, ``layers``, ``head``): dense, masked,
        structured-cut or with 2:4 ``SparseLinear`` layers.
      pairs: the requests, from ``encode_request``.
      batch_size: requests per forward pass (the last batch is padded to it).
      max_length: the most tokens the model sees; longer inputs lose their oldest tokens.
      progress: show a progress bar with requests/s.

    Returns:
      One ``Score`` per request, in the order given.

    Raises:
      ValueError: for a bad batch size or length, or a non-finite log-likelihood.
    """
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    order = sorted(range(len(pairs)),
                   key=lambda i: -(pairs[i].context.size + pairs[i].continuation.size))
    graphdef, state = nnx.split(model)
    scores: list[Score | None] = [None] * len(pairs)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pairs), unit="req", desc="log-likelihood", disable=not progress)
    for first in range(0, len(order), batch_size):
        chosen = order[first:first + batch_size]
        arrays = _batch_arrays([pairs[i] for i in chosen], max_length, batch_size)
        sums, greedy = _continuation_scores(graphdef, state, *map(jnp.asarray, arrays))
        sums, greedy = np.asarray(sums, np.float64), np.asarray(greedy)
        for row, index in enumerate(chosen):
            if not np.isfinite(sums[row]):
                raise ValueError(f"request {index} has a non-finite log-likelihood ({sums[row]})")
            scores[index] = Score(float(sums[row]), bool(greedy[row]))
        bar.update(len(chosen))
    bar.close()
    return scores
