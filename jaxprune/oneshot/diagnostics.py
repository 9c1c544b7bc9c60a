"""Layer-wise diagnostics: how each method's pruned kernels move their layers' outputs on the
calibration data, the quantities the methods optimise (``stats.output_error``)."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from jaxprune.oneshot.stats import InputStats, add_input_stats, batch_input_stats, output_error
from jaxprune.patterns import parse_pattern


@functools.partial(jax.jit, static_argnums=0)
def _block_inputs(graphdef, state, h, cos, sin):
    out, inputs = nnx.merge(graphdef, state).forward_with_inputs(h, cos, sin)
    return out, {g: batch_input_stats(x, with_gram=True) for g, x in inputs.items()}


def _dense_block_stats(block, hidden: list, cos, sin) -> tuple[list, dict[str, InputStats]]:
    graphdef, state = nnx.split(block)
    outputs, stats = [], {}
    for h in hidden:
        out, batch = _block_inputs(graphdef, state, h, cos, sin)
        outputs.append(out)
        stats = {g: add_input_stats(stats.get(g), s) for g, s in batch.items()}
    return outputs, stats


def layer_errors(model, segments: np.ndarray, methods: dict, blocks, *, pattern: str,
                 sparsity: float | None, batch_size: int = 8) -> list[dict]:
    """Each method's ``OutputError`` on every linear layer of the chosen blocks, every method
    pruning the same dense layer from the dense model's inputs (``order="dense"``).

    Args:
      model: the dense model.
      segments: calibration token ids ``[N, L]``.
      methods: label -> one-shot method value (``OneShotConfig.method``).
      blocks: block indices to measure.
      pattern, sparsity: as ``OneShotConfig``'s.
      batch_size: calibration segments per forward pass.

    Returns:
      One row per (block, layer, method): ``block``, ``layer``, ``method``, ``mse``,
      ``mean_sq``.
    """
    parsed = parse_pattern(pattern)
    sparsity = parsed.sparsity if parsed.is_n_of_m else sparsity
    for method in methods.values():
        method.check(parsed)
    segments = np.asarray(segments, np.int32)
    cos, sin = model.rope(segments.shape[1])
    hidden = [model.embed(segments[i:i + batch_size])
              for i in range(0, len(segments), batch_size)]
    rows, wanted = [], set(blocks)
    for index in range(max(wanted) + 1):
        block = model.layers[index]
        hidden, stats = _dense_block_stats(block, hidden, cos, sin)
        if index not in wanted:
            continue
        for target in (t for t in model.prunable_linears() if t.block == index):
            kernel = block
            for part in target.name.split("/"):
                kernel = getattr(kernel, part)
            kernel = kernel.kernel[...]
            for label, method in methods.items():
                pruned = method.prune_layer(kernel, stats[target.group], sparsity=sparsity,
                                            pattern=parsed, path=target.path)
                error = output_error(stats[target.group], pruned.kernel - kernel)
                rows.append({"block": index, "layer": target.name, "method": label,
                             "mse": error.mse, "mean_sq": error.mean_sq})
    return rows
