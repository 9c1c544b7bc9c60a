"""Importance of heads, KV groups, MLP channels and hidden channels, for width pruning.

Three criteria, each returning an ``Importance`` (higher = more important):

* ``activation_importance``: Minitron's activation-based scores from a calibration pass: a
  head's score is the L2 norm of its attention output, an MLP channel's the magnitude of its
  gated activation (the input of ``down_proj``), a hidden channel's the magnitude of the
  RMSNorm outputs of every block, summed over blocks. Per token scores are aggregated over the
  sequence, then over the batch (``seq_agg``, ``batch_agg``: "mean", "l2" or "max"; Minitron
  found batch L2 with sequence mean best).
* ``magnitude_importance``: the L2 norm of the weights that a unit owns.
* ``taylor_importance``: first-order Taylor ``sum |w * dL/dw|`` over the weights a unit owns,
  with the language-model loss on the calibration batch.

A KV group's score is the sum of its query heads' scores.

References:
  Muralidharan et al. 2024, "Compact language models via pruning and knowledge distillation"
  (Minitron), section 2.2; Molchanov et al. 2019, "Importance estimation for neural network
  pruning" (Taylor).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.losses import next_token_nll

AGGREGATIONS = ("mean", "l2", "max")


@dataclasses.dataclass
class Importance:
    """Scores per unit. Lists hold one array per block (widths may differ between blocks).

    Attributes:
      heads: ``[num_heads]`` per block.
      kv_groups: ``[num_kv_heads]`` per block.
      mlp: ``[intermediate_size]`` per block.
      hidden: ``[hidden_size]``.
    """

    heads: list[np.ndarray]
    kv_groups: list[np.ndarray]
    mlp: list[np.ndarray]
    hidden: np.ndarray


def _group_sums(heads: list[np.ndarray], config) -> list[np.ndarray]:
    return [h.reshape(config.num_kv_heads[b], -1).sum(axis=1) for b, h in enumerate(heads)]


def _check_aggregation(name: str, value: str) -> None:
    if value not in AGGREGATIONS:
        raise ValueError(f"{name} must be one of {AGGREGATIONS}, got {value!r}")


def _reduce_sequence(scores: jax.Array, how: str) -> jax.Array:
    """``[batch, seq, units]`` -> ``[batch, units]``."""
    if how == "mean":
        return jnp.mean(scores, axis=1)
    if how == "l2":
        return jnp.sqrt(jnp.sum(scores * scores, axis=1))
    return jnp.max(scores, axis=1)


class _BatchAccumulator:
    """Aggregates ``[batch, units]`` rows over every batch: mean, L2 or max."""

    def __init__(self, how: str):
        self.how, self.total, self.count = how, None, 0

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float64)
        if self.how == "max":
            part = rows.max(axis=0)
            self.total = part if self.total is None else np.maximum(self.total, part)
        else:
            part = (rows * rows if self.how == "l2" else rows).sum(axis=0)
            self.total = part if self.total is None else self.total + part
        self.count += rows.shape[0]

    def result(self) -> np.ndarray:
        if self.how == "l2":
            return np.sqrt(self.total)
        return self.total / self.count if self.how == "mean" else self.total


# Module-level with the graph static: every call on a model of one structure shares it.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _activation_scores_of_batch(graphdef, seq_agg: str, state, tokens):
    net = nnx.merge(graphdef, state)
    h = net.embed(tokens)
    cos, sin = net.rope(tokens.shape[1])
    heads, mlp, hidden = [], [], 0.0
    for block in net.layers:
        h, inputs = block.forward_with_inputs(h, cos, sin)
        per_head = inputs["o"].reshape(*inputs["o"].shape[:2], block.self_attn.num_heads, -1)
        heads.append(_reduce_sequence(jnp.linalg.norm(per_head.astype(jnp.float32), axis=-1),
                                      seq_agg))
        mlp.append(_reduce_sequence(jnp.abs(inputs["down"].astype(jnp.float32)), seq_agg))
        normed = jnp.abs(inputs["attn"].astype(jnp.float32)) + jnp.abs(
            inputs["mlp"].astype(jnp.float32))
        hidden = hidden + _reduce_sequence(normed, seq_agg)
    return heads, mlp, hidden


def activation_importance(model, segments: np.ndarray, *, batch_size: int = 8,
                          seq_agg: str = "mean", batch_agg: str = "l2") -> Importance:
    """Minitron's activation-based importance from a calibration pass (module docstring).

    Args:
      model: a ``jaxprune.models.Llama``.
      segments: calibration token ids ``[num_segments, length]``.
      batch_size: segments per forward pass.
      seq_agg: aggregation over the sequence: "mean", "l2" or "max".
      batch_agg: aggregation over the examples: "mean", "l2" or "max".

    Returns:
      The ``Importance`` of every unit.

    Raises:
      ValueError: for an unknown aggregation or an empty calibration batch.
    """
    _check_aggregation("seq_agg", seq_agg)
    _check_aggregation("batch_agg", batch_agg)
    segments = np.asarray(segments)
    if segments.ndim != 2 or segments.shape[0] == 0:
        raise ValueError(f"segments must be [num_segments, length] with at least one segment, "
                         f"got shape {segments.shape}")
    config = model.config
    graphdef, state = nnx.split(model)

    acc_heads = [_BatchAccumulator(batch_agg) for _ in range(config.num_layers)]
    acc_mlp = [_BatchAccumulator(batch_agg) for _ in range(config.num_layers)]
    acc_hidden = _BatchAccumulator(batch_agg)
    for start in range(0, segments.shape[0], batch_size):
        heads, mlp, hidden = _activation_scores_of_batch(
            graphdef, seq_agg, state, jnp.asarray(segments[start:start + batch_size]))
        for b in range(config.num_layers):
            acc_heads[b].add(heads[b])
            acc_mlp[b].add(mlp[b])
        acc_hidden.add(hidden)
    head_scores = [a.result() for a in acc_heads]
    return Importance(heads=head_scores, kv_groups=_group_sums(head_scores, config),
                      mlp=[a.result() for a in acc_mlp], hidden=acc_hidden.result())


def _unit_scores(model, leaf_score) -> Importance:
    """Sums ``leaf_score(path) -> array of the kernel's shape`` over the weights of each unit."""
    config = model.config
    d = config.head_dim
    heads, mlp = [], []
    hidden = np.zeros(config.hidden_size)
    for block in model.layers:
        attn, ff = block.self_attn, block.mlp
        q = leaf_score(attn.q_proj.kernel)  # [h, nh*d]
        o = leaf_score(attn.o_proj.kernel)  # [nh*d, h]
        heads.append(q.reshape(q.shape[0], -1, d).sum(axis=(0, 2))
                     + o.reshape(-1, d, o.shape[1]).sum(axis=(1, 2)))
        gate, up, down = (leaf_score(ff.gate_proj.kernel), leaf_score(ff.up_proj.kernel),
                          leaf_score(ff.down_proj.kernel))
        mlp.append(gate.sum(axis=0) + up.sum(axis=0) + down.sum(axis=1))
        for reader in (attn.q_proj, attn.k_proj, attn.v_proj, ff.gate_proj, ff.up_proj):
            hidden += leaf_score(reader.kernel).sum(axis=1)
        for writer in (attn.o_proj, ff.down_proj):
            hidden += leaf_score(writer.kernel).sum(axis=0)
    hidden += leaf_score(model.embed_tokens.embedding).sum(axis=0)
    return Importance(heads=heads, kv_groups=_group_sums(heads, config), mlp=mlp, hidden=hidden)


def magnitude_importance(model) -> Importance:
    """The L2 norm of the weights each unit owns (a head: its q columns and o rows; a channel:
    its gate and up columns and down row; a hidden channel: every weight on its row or column
    of the residual stream, the embedding included)."""
    squares = _unit_scores(model, lambda v: np.asarray(v[...], np.float64) ** 2)
    return Importance(heads=[np.sqrt(h) for h in squares.heads],
                      kv_groups=_group_sums([np.sqrt(h) for h in squares.heads], model.config),
                      mlp=[np.sqrt(m) for m in squares.mlp], hidden=np.sqrt(squares.hidden))


@functools.partial(jax.jit, static_argnums=0)
def _nll_gradient(graphdef, params, rest, tokens):
    """Gradient of the batch's summed mean next-token NLL with respect to ``params``."""
    return jax.grad(lambda p: jnp.sum(jnp.mean(
        next_token_nll(nnx.merge(graphdef, p, rest), tokens), axis=-1)))(params)


def taylor_importance(model, segments: np.ndarray, *, batch_size: int = 8) -> Importance:
    """First-order Taylor importance ``sum |w * dL/dw|`` per unit, the gradient summed over
    the calibration batch (mean next-token NLL).

    Args:
      model: a ``jaxprune.models.Llama``.
      segments: calibration token ids ``[num_segments, length]``.
      batch_size: segments per gradient computation.

    Returns:
      The ``Importance`` of every unit.
    """
    segments = np.asarray(segments)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    total = None
    for start in range(0, segments.shape[0], batch_size):
        grads = _nll_gradient(graphdef, params, rest,
                              jnp.asarray(segments[start:start + batch_size]))
        total = grads if total is None else jax.tree.map(jnp.add, total, grads)
    total = jax.tree.map(lambda g: g / segments.shape[0], total)
    products = jax.tree.map(lambda w, g: jnp.abs(w * g), params, total)
    saliency = nnx.merge(graphdef, products, rest)
    return _unit_scores(saliency, lambda v: np.asarray(v[...], np.float64))
