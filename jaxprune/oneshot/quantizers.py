"""Weight quantizers as values: round-to-nearest and GPTQ, for one kernel or the one-shot engine
(``OneShotConfig(quantization=GPTQ(spec))``; the grid is ``jaxprune.quant.QuantSpec``).

A quantizer has ``statistic`` (what the one-shot engine collects for it: ``None``, or the
inputs' Gram matrix) and ``quantize_layer(kernel, keep, statistic, *, path)``, which returns a
``QuantizedLayer``: the kernel on the quantization grid (its pruned entries still exactly
zero) and the same as a ``qwix.QArray``. Round-to-nearest is qwix's own ``qwix.quantize``;
GPTQ is SparseGPT's column sweep with a fixed mask (``jaxprune.oneshot.sparsegpt``), which
qwix's single-pass GPTQ (``qwix.contrib.gptq``) cannot run block by block on a pruned model nor
combine with pruning.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import qwix
from flax import nnx

from jaxprune.oneshot import sparsegpt
from jaxprune.oneshot.methods import GRAM
from jaxprune.quant.spec import QuantSpec, check_quant_settings


class QuantizedLayer(NamedTuple):
    """One quantized kernel: ``kernel`` (float, on the grid), ``quantized`` (its
    ``qwix.QArray``) and report fields ``info``."""

    kernel: jax.Array
    quantized: Any
    info: dict


def rtn_quantize_kernel(kernel: jax.Array, spec: QuantSpec) -> QuantizedLayer:
    """Rounds each weight of a ``[in, out]`` kernel to the nearest point of its group's grid.

    Args:
      kernel: Flax kernel ``[in, out]``; scale groups run along the input axis.
      spec: bits, group size and symmetry.

    Returns:
      A ``QuantizedLayer`` (zeros stay zeros: zero is on every grid).

    Raises:
      ValueError: for a group size that does not divide the input size.
    """
    spec.check_layer(kernel.shape[0])
    quantized = qwix.quantize(
        kernel, spec.qtype, channelwise_axes=(1,),
        tiled_axes={0: spec.group_size} if spec.group_size else {},
        calibration_method="absmax" if spec.symmetric else "minmax")
    return QuantizedLayer(qwix.dequantize(quantized).astype(kernel.dtype), quantized, {})


def gptq_quantize_layer(kernel: jax.Array, gram: jax.Array, spec: QuantSpec, *,
                        keep: jax.Array | None = None, blocksize: int = 128,
                        damp: float = 0.01, name: str = "layer") -> QuantizedLayer:
    """GPTQ on one kernel: quantize column by column, compensating each column's rounding
    error on the columns not quantized yet through the inverse Hessian of the layer's loss.

    Args:
      kernel: Flax kernel ``[in, out]``.
      gram: ``X^T X`` of the layer's inputs ``[in, in]``.
      spec: bits, group size and symmetry.
      keep: ``[in, out]`` weights to keep (the others are held at exactly zero, as a pruned
        layer needs); ``None``: all of them.
      blocksize: columns per lazy-update block.
      damp: dampening, a fraction of the mean Hessian diagonal (raised tenfold while the
        Cholesky factorisation fails).
      name: the layer, for errors.

    Returns:
      A ``QuantizedLayer`` whose info holds the dampening used.

    References:
      Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative
      Pre-trained Transformers", Algorithm 1 (scale groups as in its code).

    Raises:
      ValueError: for shapes that do not match or a group size that does not divide the inputs.
      FloatingPointError: when the solve fails even with raised dampening.
    """
    keep = jnp.ones(kernel.shape, bool) if keep is None else keep
    result, used = sparsegpt.sweep_with_retry(kernel, gram, name=name, damp=damp, keep=keep,
                                              quant=spec, blocksize=blocksize)
    return QuantizedLayer(result.kernel, result.quantized, {"quant_damp": used})


@dataclasses.dataclass(frozen=True)
class RoundToNearest:
    """Round-to-nearest quantization of every kernel (no calibration)."""

    spec: QuantSpec = QuantSpec()
    statistic = None
    name = "rtn"

    def quantize_layer(self, kernel, keep, statistic, *, path: str) -> QuantizedLayer:
        """Quantizes ``kernel`` (``keep`` and ``statistic`` unused: zeros stay zeros)."""
        del keep, statistic
        self.spec.check_layer(kernel.shape[0], path)
        return rtn_quantize_kernel(kernel, self.spec)


@dataclasses.dataclass(frozen=True)
class GPTQ:
    """GPTQ on each kernel from its inputs' Gram matrix, keeping its mask.

    Attributes:
      spec: bits, group size and symmetry.
      blocksize: columns per lazy-update block.
      damp: dampening, a fraction of the mean Hessian diagonal, in (0, 1].
    """

    spec: QuantSpec = QuantSpec()
    blocksize: int = 128
    damp: float = 0.01
    statistic = GRAM
    name = "gptq"

    def __post_init__(self):
        sparsegpt.check_sparsegpt_settings(self.blocksize, self.damp, None)

    def quantize_layer(self, kernel, keep, statistic, *, path: str) -> QuantizedLayer:
        """GPTQ on ``kernel`` keeping ``keep``; ``statistic`` is the layer's ``InputStats``."""
        self.spec.check_layer(kernel.shape[0], path)
        return gptq_quantize_layer(kernel, statistic.gram, self.spec, keep=keep,
                                   blocksize=self.blocksize, damp=self.damp, name=path)


def quant_spec(quant_bits: int, quant_group_size: int, quant_symmetric: bool) -> QuantSpec:
    """The ``QuantSpec`` of the config fields of the same names.

    Raises:
      ValueError: naming the field (``quant_bits`` ...), its value and what is allowed.
    """
    check_quant_settings(quant_bits, quant_group_size, quant_symmetric, prefix="quant_")
    return QuantSpec(quant_bits, quant_group_size, quant_symmetric)


def rtn_quantizer(quant_bits: int, quant_group_size: int,
                  quant_symmetric: bool) -> RoundToNearest:
    """``RoundToNearest`` from the config fields (``config.quantize="rtn"``)."""
    return RoundToNearest(quant_spec(quant_bits, quant_group_size, quant_symmetric))


def gptq_quantizer(quant_bits: int, quant_group_size: int, quant_symmetric: bool,
                   blocksize: int, damp: float) -> GPTQ:
    """``GPTQ`` from the config fields (``config.quantize="gptq"``); the lazy-update block and
    the dampening are SparseGPT's fields, which mean the same."""
    return GPTQ(quant_spec(quant_bits, quant_group_size, quant_symmetric), blocksize, damp)


# Where the token embedding table sits in a model's state (``nnx.Embed`` of ``jaxprune.models``).
EMBEDDING_PATH = "embed_tokens/embedding"


def quantize_embedding(model, bits: int) -> tuple[Any, Any]:
    """Round-to-nearest of a model's token embedding table, symmetric, one scale per token.

    A token's row is both what the embedding returns and, with tied embeddings, one output
    unit of the head, so one scale per row is the head's per-channel grid too. The one-shot
    engine never touches the table; this quantizes it after pruning, for the packed size.

    Args:
      model: a ``jaxprune.models`` model (left unchanged).
      bits: 4 or 8.

    Returns:
      ``(quantized model, table)``: a copy whose table holds the values on the grid, and the
      table as a ``qwix.QArray`` over its transpose ``[hidden, vocab]`` (scales ``[1, vocab]``).

    Raises:
      ValueError: for bits other than 4 or 8.
    """
    check_quant_settings(bits, 0, True, prefix="quant_embedding_")
    table = model.embed_tokens.embedding[...]
    layer = rtn_quantize_kernel(table.T, QuantSpec(bits, 0, True))
    quantized = nnx.clone(model)
    quantized.embed_tokens.embedding[...] = layer.kernel.T
    return quantized, layer.quantized
