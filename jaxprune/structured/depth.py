"""Depth pruning: which whole blocks to remove.

* ``block_influence``: ShortGPT's Block Influence, ``1 - cos(h_in, h_out)`` averaged over every
  token: a block that barely turns the residual stream matters little.
* ``angular_distances``: Gromov et al.'s ``arccos(cos(h_l, h_{l+n})) / pi`` between the inputs
  of blocks ``l`` and ``l + n`` at the last token of each segment, averaged over segments; the
  run of ``n`` blocks starting at the smallest distance is the one to remove.
* ``drop_one_perplexity``: the perplexity of the model without each block, one at a time.

References:
  Men et al. 2024, "ShortGPT: layers in large language models are more redundant than you
  expect"; Gromov et al. 2024, "The unreasonable ineffectiveness of the deeper layers".
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.eval import perplexity
from jaxprune.structured.surgery import remove_blocks


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
                                 + 1e-12)


# Module-level with the graph static: every call on a model of one structure shares it.
@functools.partial(jax.jit, static_argnums=0)
def _streams(graphdef, state, tokens):
    net = nnx.merge(graphdef, state)
    h = net.embed(tokens)
    cos, sin = net.rope(tokens.shape[1])
    out = [h]
    for block in net.layers:
        h = block(h, cos, sin)
        out.append(h)
    return out


def residual_streams(model, segments: np.ndarray, *, batch_size: int = 8):
    """Yields, per batch of segments, the residual stream entering every block and leaving the
    last: a list of ``num_layers + 1`` arrays ``[batch, seq, hidden]``."""
    graphdef, state = nnx.split(model)
    segments = np.asarray(segments)
    for start in range(0, segments.shape[0], batch_size):
        yield _streams(graphdef, state, jnp.asarray(segments[start:start + batch_size]))


def block_influence(model, segments: np.ndarray, *, batch_size: int = 8) -> np.ndarray:
    """ShortGPT's Block Influence of every block, ``[num_layers]`` (higher = keep)."""
    total, count = np.zeros(model.config.num_layers), 0
    for hs in residual_streams(model, segments, batch_size=batch_size):
        for i in range(model.config.num_layers):
            total[i] += float(jnp.sum(1.0 - _cosine(hs[i], hs[i + 1])))
        count += hs[0].shape[0] * hs[0].shape[1]
    return total / count


def angular_distances(model, segments: np.ndarray, n: int, *,
                      batch_size: int = 8) -> np.ndarray:
    """Angular distance between the inputs of blocks ``l`` and ``l + n`` for every ``l``.

    Returns:
      ``[num_layers - n + 1]``: entry ``l`` scores removing blocks ``l .. l + n - 1``.

    Raises:
      ValueError: unless ``1 <= n <= num_layers``.
    """
    layers = model.config.num_layers
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= layers:
        raise ValueError(f"n must be an integer in [1, {layers}], got {n!r}")
    total, count = np.zeros(layers - n + 1), 0
    for hs in residual_streams(model, segments, batch_size=batch_size):
        for start in range(layers - n + 1):
            cos = jnp.clip(_cosine(hs[start][:, -1], hs[start + n][:, -1]), -1.0, 1.0)
            total[start] += float(jnp.sum(jnp.arccos(cos) / jnp.pi))
        count += hs[0].shape[0]
    return total / count


def drop_one_perplexity(model, tokens: np.ndarray, *, window: int = 512, batch_size: int = 8,
                        max_windows: int | None = None) -> np.ndarray:
    """Perplexity without each block in turn, ``[num_layers]`` (higher = keep)."""
    return np.asarray([
        perplexity(remove_blocks(model, [i]), tokens, window=window, batch_size=batch_size,
                   max_windows=max_windows, progress=False).perplexity
        for i in range(model.config.num_layers)])


def least_important(scores: np.ndarray, count: int) -> list[int]:
    """The ``count`` indices with the lowest scores (ties: lower index first), sorted."""
    scores = np.asarray(scores)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < scores.size:
        raise ValueError(f"count must be an integer in [0, {scores.size}), got {count!r}")
    return sorted(np.argsort(scores, kind="stable")[:count].tolist())


def closest_pairs(distances: np.ndarray, count: int, *, lowest: int = 0) -> list[int]:
    """``count`` non-overlapping pairs of consecutive blocks to fuse, most similar first.

    Args:
      distances: ``angular_distances(model, segments, 2)``: entry ``l`` is the distance between
        the inputs of blocks ``l`` and ``l + 2``, how much the pair ``(l, l + 1)`` changes the
        residual stream together.
      count: how many pairs.
      lowest: the lowest block a pair may start at (1 for a fusion method that never fuses
        block 0).

    Returns:
      The first block of each chosen pair, sorted; greedily the smallest distance whose pair
      shares no block with one already chosen (ties: lower index).

    Raises:
      ValueError: when ``count`` disjoint pairs do not exist.
    """
    distances = np.asarray(distances)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    taken, chosen = set(), []
    for start in np.argsort(distances, kind="stable").tolist():
        if len(chosen) == count:
            break
        if start < lowest or start in taken or start + 1 in taken:
            continue
        chosen.append(start)
        taken.update((start, start + 1))
    if len(chosen) < count:
        raise ValueError(f"count={count} disjoint pairs of consecutive blocks do not exist among "
                         f"blocks {lowest}..{distances.size} (greedy choice found "
                         f"{len(chosen)})")
    return sorted(chosen)
