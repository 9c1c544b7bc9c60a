"""Quantization-aware training and distillation through qwix's fake quantization.

``quantization_aware(model, spec, tokens)`` returns a copy whose linear layers (the ones
``model.prunable_linears()`` names) compute with their kernels rounded to ``spec``'s grid in
every forward pass, with straight-through gradients (qwix's ``QtProvider``, weights only). It
trains like any model (``Trainer``, ``distill``); ``plain_model`` puts the trained parameters
back into the plain model, and round-to-nearest on the same grid
(``oneshot.quantize_model(model, segments, RoundToNearest(spec))``) then gives exactly the
weights the training saw (tests/test_qat.py).

References:
  Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference" (straight-through fake quantization); Muralidharan et
  al. 2024 (Minitron) for distillation after structured pruning.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import qwix
from flax import nnx

from jaxprune.quant.spec import QuantSpec

# The module paths of the block linear layers (``layers/3/mlp/up_proj``), as qwix sees them.
LINEAR_MODULES = r"layers/\d+/(self_attn|mlp)/\w+_proj"


def quantization_aware(model, spec: QuantSpec, sample_tokens: np.ndarray):
    """A copy of ``model`` whose block linear layers see ``spec``'s grid in every forward.

    Args:
      model: a ``jaxprune.models.Llama`` (left unchanged).
      spec: the grid (qwix's ``absmax`` for symmetric, ``minmax`` for asymmetric, groups of
        ``spec.group_size`` inputs or one scale per output unit).
      sample_tokens: token ids ``[batch, seq]`` that qwix traces the model with.

    Returns:
      The fake-quantized model (same parameters, as ``nnx.Param``).
    """
    rule = qwix.QtRule(module_path=LINEAR_MODULES, weight_qtype=spec.qtype,
                       tile_size=spec.group_size or None,
                       weight_calibration_method="absmax" if spec.symmetric else "minmax")
    return qwix.quantize_model(nnx.clone(model), qwix.QtProvider([rule]),
                               jnp.asarray(sample_tokens))


def plain_model(trained, plain):
    """A copy of ``plain`` (the model ``quantization_aware`` wrapped) holding ``trained``'s
    parameters."""
    model = nnx.clone(plain)
    nnx.update(model, nnx.state(trained, nnx.Param))
    return model
