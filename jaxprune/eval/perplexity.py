"""Perplexity by the reference protocol of the SparseGPT and Wanda papers.

The test text is tokenized as one stream (no BOS), cut into non-overlapping windows of L tokens
(the remainder is dropped), and every window is scored independently: each of its L - 1 next
tokens contributes its negative log-likelihood. Perplexity is exp of the mean NLL, which equals
the papers' exp(sum of per-window mean NLL * L / (windows * L)).

A model trained to always see a BOS token first (Gemma: 72.3 without it against 27.9 with it on
16 windows of WikiText-2) gets windows of BOS and L - 1 text tokens instead (``bos_id``): the
same L positions and L - 1 predictions per window, every one of them a text token.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.eval.head import vocab_sliced_scores
from jaxprune.losses import next_token_nll


@dataclasses.dataclass(frozen=True)
class PerplexityResult:
    """Outcome of a perplexity evaluation."""

    perplexity: float
    mean_nll: float
    num_windows: int
    window: int
    num_predicted: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        """Input tokens processed per second (windows x L / wall time)."""
        return self.num_windows * self.window / self.seconds if self.seconds else float("nan")


def evaluation_windows(tokens: np.ndarray, window: int, max_windows: int | None = None, *,
                       bos_id: int | None = None) -> np.ndarray:
    """Non-overlapping windows ``[n, window]`` of a token stream, remainder dropped; with
    ``bos_id``, each window is that token then the next ``window - 1`` tokens of the stream.

    Raises:
      ValueError: if the stream is shorter than one window or the arguments are not positive.
    """
    tokens = np.asarray(tokens)
    if not isinstance(window, (int, np.integer)) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    if max_windows is not None and (not isinstance(max_windows, (int, np.integer))
                                    or max_windows < 1):
        raise ValueError(f"max_windows must be a positive integer or None, got {max_windows!r}")
    text = window - (bos_id is not None)
    count = tokens.size // text
    if count == 0:
        raise ValueError(f"the evaluation text has {tokens.size} tokens, fewer than one window "
                         f"of {window}")
    if max_windows is not None:
        count = min(count, max_windows)
    windows = tokens[: count * text].reshape(count, text).astype(np.int32)
    if bos_id is None:
        return windows
    return np.concatenate([np.full((count, 1), bos_id, np.int32), windows], axis=1)


def _nll_sums(model, batch: jax.Array) -> jax.Array:
    """Summed next-token NLL of each row of ``batch`` ``[B, L]``, in float32."""
    return jnp.sum(next_token_nll(model, batch), axis=-1)


# Module-level with the graph static, so that evaluating a model of the same structure again
# (a warm-up run, the same model after a weight update) reuses the compiled function.
@functools.partial(jax.jit, static_argnums=0)
def _batch_nll(graphdef, state, batch: jax.Array) -> jax.Array:
    return _nll_sums(nnx.merge(graphdef, state), batch)


def _padded_batches(windows: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, int]]:
    """``(batch, real rows)`` pairs of ``batch_size`` windows, the last padded with copies of
    its last window (one compiled shape; padded rows are discarded)."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batches = []
    for first in range(0, windows.shape[0], batch_size):
        batch = windows[first:first + batch_size]
        real = batch.shape[0]
        if real < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, axis=0)])
        batches.append((batch, real))
    return batches


def _result(total: float, windows: np.ndarray, window: int, seconds: float
            ) -> PerplexityResult:
    predicted = windows.shape[0] * (window - 1)
    mean_nll = total / predicted
    if not math.isfinite(mean_nll):
        raise ValueError(f"perplexity evaluation produced a non-finite mean NLL ({mean_nll})")
    return PerplexityResult(
        perplexity=math.exp(mean_nll), mean_nll=mean_nll, num_windows=windows.shape[0],
        window=window, num_predicted=predicted, seconds=seconds,
    )


def perplexity(model, tokens: np.ndarray, *, window: int = 512, batch_size: int = 8,
               max_windows: int | None = None, progress: bool = True,
               bos_id: int | None = None) -> PerplexityResult:
    """Evaluates perplexity of a causal LM on a token stream.

    Args:
      model: a callable NNX module mapping ``[B, T]`` ids to ``[B, T, vocab]`` logits.
      tokens: the test stream, 1-D.
      window: L, tokens per window.
      batch_size: windows per forward pass.
      max_windows: evaluate only the first windows (the papers use all of them).
      progress: show a progress bar with tokens/s.
      bos_id: start every window with this token (for models that always see one first).

    Returns:
      A ``PerplexityResult``.

    Raises:
      ValueError: for a text shorter than one window, bad sizes, or a non-finite NLL.
    """
    windows = evaluation_windows(tokens, window, max_windows, bos_id=bos_id)
    batches = _padded_batches(windows, batch_size)
    graphdef, state = nnx.split(model)
    total = 0.0
    start = time.perf_counter()
    from tqdm.auto import tqdm  # here: decoding and the kernels' benchmarks run without tqdm

    bar = tqdm(total=windows.shape[0] * window, unit="tok", unit_scale=True,
               desc="perplexity", disable=not progress)
    for batch, real in batches:
        sums = np.asarray(_batch_nll(graphdef, state, jnp.asarray(batch)),
                          dtype=np.float64)[:real]
        total += float(sums.sum())
        bar.update(real * window)
    bar.close()
    return _result(total, windows, window, time.perf_counter() - start)


@functools.partial(jax.jit, static_argnums=0)
def _embed_inputs(graphdef, state, batch: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state).embed(batch[:, :-1])


@functools.partial(jax.jit, static_argnums=0)
def _block_output(graphdef, state, h: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(h, cos, sin)


def _head_nll_sums(shell, h: jax.Array, batch: jax.Array) -> jax.Array:
    # A vocabulary slice at a time: the whole head's logits (and, on a CPU, a float32 copy of
    # a bfloat16 head) would be the largest thing a streamed run holds.
    target_logp, _ = vocab_sliced_scores(shell, h, batch[:, 1:])
    return -jnp.sum(target_logp, axis=-1)


def streamed_perplexity(source, tokens: np.ndarray, *, window: int = 512, batch_size: int = 8,
                        max_windows: int | None = None, progress: bool = True,
                        bos_id: int | None = None) -> PerplexityResult:
    """``perplexity`` of a model opened lazily (``jaxprune.models.LazyModel``), one block at
    a time: every window is embedded, then each block is read from disk and run over all of
    them before the next is read, then the head scores them. Memory holds one block and the
    activations of every window (``windows x (window - 1) x hidden`` floats), never the whole
    model. The same windows and NLL as ``perplexity``; the sums agree to float32 rounding
    (the programs are split at the blocks).

    Args:
      source: the model, a ``LazyModel``.
      tokens, window, batch_size, max_windows, progress, bos_id: as ``perplexity``.

    Returns:
      A ``PerplexityResult``.

    Raises:
      ValueError: as ``perplexity``.
    """
    windows = evaluation_windows(tokens, window, max_windows, bos_id=bos_id)
    batches = _padded_batches(windows, batch_size)
    start = time.perf_counter()
    shell = source.shell()
    shell_graphdef, shell_state = nnx.split(shell)
    hidden = [_embed_inputs(shell_graphdef, shell_state, jnp.asarray(b)) for b, _ in batches]
    cos, sin = shell.rope(window - 1)
    from tqdm.auto import tqdm

    for index in tqdm(range(source.config.num_layers), desc="perplexity (streamed)",
                      unit="block", disable=not progress):
        graphdef, state = nnx.split(source.block(index))
        hidden = [_block_output(graphdef, state, h, cos, sin) for h in hidden]
    total = 0.0
    for (batch, real), h in zip(batches, hidden, strict=True):
        sums = np.asarray(_head_nll_sums(shell, h, jnp.asarray(batch)),
                          dtype=np.float64)[:real]
        total += float(sums.sum())
    return _result(total, windows, window, time.perf_counter() - start)
