"""Layer-wise diagnostics: how each method's pruned (and quantized) kernels move their layers'
outputs on the calibration data, the quantities the methods optimise (``stats.output_error``)."""

from __future__ import annotations

import numpy as np

from jaxprune.oneshot.engine import _collect_block_stats, _linear
from jaxprune.oneshot.stats import output_error
from jaxprune.patterns import parse_pattern


def variant_plan(settings) -> tuple:
    """``(method, parsed pattern, sparsity, quantizer or None)`` of a ``OneShotConfig`` (an
    N:M pattern's own sparsity), checked before any work.

    Raises:
      ValueError: when the method cannot prune by the pattern.
    """
    parsed = parse_pattern(settings.pattern)
    settings.method.check(parsed)
    sparsity = parsed.sparsity if parsed.is_n_of_m else settings.sparsity
    return settings.method, parsed, sparsity, settings.quantization


def layer_errors(model, segments: np.ndarray, variants: dict, blocks, *,
                 batch_size: int = 8) -> list[dict]:
    """Each variant's ``OutputError`` on every linear layer of the chosen blocks, every variant
    pruning (then quantizing, with a quantizer) the same dense layer from the dense model's
    inputs (``order="dense"``).

    Args:
      model: the dense model.
      segments: calibration token ids ``[N, L]``.
      variants: label -> ``OneShotConfig`` (its method, pattern, sparsity and quantization are
        used), so each method can prune by its own comparison group.
      blocks: block indices to measure.
      batch_size: calibration segments per forward pass.

    Returns:
      One row per (block, layer, variant): ``block``, ``layer``, ``method`` (the label),
      ``mse``, ``mean_sq``.

    Raises:
      ValueError: naming the variant whose method cannot prune by its pattern (before work).
    """
    plans = {}
    for label, settings in variants.items():
        try:
            plans[label] = variant_plan(settings)
        except ValueError as err:
            raise ValueError(f"variant {label!r}: {err}") from None
    segments = np.asarray(segments, np.int32)
    cos, sin = model.rope(segments.shape[1])
    hidden = [model.embed(segments[i:i + batch_size])
              for i in range(0, len(segments), batch_size)]
    rows, wanted = [], set(blocks)
    groups = tuple(sorted({t.group for t in model.prunable_linears()}))
    for index in range(max(wanted) + 1):
        block = model.layers[index]
        # The engine's own pass: the block's dense outputs and its inputs' sums.
        hidden, stats = _collect_block_stats(block, hidden, cos, sin, groups, True)
        if index not in wanted:
            continue
        for target in (t for t in model.prunable_linears() if t.block == index):
            kernel = _linear(block, target.name).kernel[...]
            for label, (method, parsed, sparsity, quantizer) in plans.items():
                pruned = method.prune_layer(kernel, stats[target.group], sparsity=sparsity,
                                            pattern=parsed, path=target.path)
                changed = pruned.kernel if quantizer is None else quantizer.quantize_layer(
                    pruned.kernel, pruned.keep, stats[target.group], path=target.path).kernel
                error = output_error(stats[target.group], changed - kernel)
                rows.append({"block": index, "layer": target.name, "method": label,
                             "mse": error.mse, "mean_sq": error.mean_sq})
    return rows
