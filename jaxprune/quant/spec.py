"""How a weight matrix is quantized: bit width, scale groups, symmetric or not.

The numerics are qwix's (``qwix.quantize``), so a kernel quantized here is a ``qwix.QArray``
that qwix's quantized matmuls and LoRA providers take as it is:

* symmetric: ``scale = max|w| / (2^(b-1) - 1/2)``, ``q = clip(round(w / scale))`` in
  ``[-2^(b-1), 2^(b-1) - 1]`` (int4: -8..7, the largest magnitude lands on the edge bucket);
* asymmetric: ``scale = (max - min) / (2^b - 1)`` with ``min <= 0 <= max``,
  ``zero = round(-2^(b-1) - min / scale)``, ``q = clip(round(w / scale + zero))``;
* ``w ~ scale * (q - zero)``; zero is always exactly representable, so pruned weights stay
  exactly zero after quantization.

A scale group is one output unit (``group_size=0``, per channel) or ``group_size``
consecutive inputs of one output unit. These are also the conventions of the
``compressed-tensors`` format (its int4 is the same signed range with the same scales).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

BITS = (4, 8)
_QTYPES = {4: jnp.int4, 8: jnp.int8}
# A scale below this is replaced by 1 (an all-zero group), as qwix does.
_TINY_SCALE = math.sqrt(float(jnp.finfo(jnp.float32).tiny))


def check_quant_settings(bits, group_size, symmetric, *, prefix: str = "") -> None:
    """Checks quantization settings; errors name them with ``prefix`` (``quant_`` for the
    config fields).

    Raises:
      ValueError: naming the setting, its value and what is allowed.
    """
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"{prefix}bits must be one of {BITS}, got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 0:
        raise ValueError(f"{prefix}group_size must be 0 (one scale per output unit) or a "
                         f"positive number of inputs, got {group_size!r}")
    if not isinstance(symmetric, bool):
        raise ValueError(f"{prefix}symmetric must be True or False, got {symmetric!r}")


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """Weight quantization settings.

    Attributes:
      bits: 4 or 8.
      group_size: inputs sharing one scale within an output unit; 0 for one scale per output
        unit (per channel).
      symmetric: no zero point (``True``) or a per-group zero point (``False``).
    """

    bits: int = 4
    group_size: int = 128
    symmetric: bool = True

    def __post_init__(self):
        check_quant_settings(self.bits, self.group_size, self.symmetric)

    @property
    def qtype(self):
        """The integer dtype of the codes (``jnp.int4`` or ``jnp.int8``)."""
        return _QTYPES[self.bits]

    @property
    def code_range(self) -> tuple[int, int]:
        """The smallest and largest code."""
        return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1

    @property
    def label(self) -> str:
        """``int4-g128-sym``-style name for tables and reports."""
        group = f"g{self.group_size}" if self.group_size else "channel"
        return f"int{self.bits}-{group}-{'sym' if self.symmetric else 'asym'}"

    def group_of(self, in_features: int) -> int:
        """Inputs per scale group of a layer with ``in_features`` inputs."""
        return self.group_size or in_features

    def check_layer(self, in_features: int, name: str = "layer") -> None:
        """Raises ``ValueError`` when the group size does not divide the layer's input size."""
        if self.group_size and in_features % self.group_size:
            raise ValueError(f"quantization group_size {self.group_size} does not divide the "
                             f"{in_features} inputs of {name!r}; choose a divisor or 0 (one "
                             f"scale per output unit)")

    def storage_bytes(self, in_features: int, out_features: int) -> int:
        """Bytes of a quantized ``[in, out]`` kernel: packed codes, float16 scales and (for
        asymmetric) zero points packed like the codes."""
        groups = out_features * (in_features // self.group_of(in_features))
        codes = math.ceil(in_features * out_features * self.bits / 8)
        zeros = 0 if self.symmetric else math.ceil(groups * self.bits / 8)
        return codes + 2 * groups + zeros


def group_scale_zero(weights: jax.Array, spec: QuantSpec) -> tuple[jax.Array, jax.Array]:
    """The scale and zero point of each row of ``weights [rows, group]`` (one scale group
    per row), by qwix's conventions (module docstring).

    Returns:
      ``(scale [rows], zero [rows])``, the zero point as a float holding an integer (0 when
      symmetric).
    """
    low, high = spec.code_range
    if spec.symmetric:
        scale = jnp.max(jnp.abs(weights), axis=1) / (high + 0.5)
        zero = jnp.zeros_like(scale)
    else:
        smallest = jnp.minimum(jnp.min(weights, axis=1), 0.0)
        largest = jnp.maximum(jnp.max(weights, axis=1), 0.0)
        scale = (largest - smallest) / (high - low)
    scale = jnp.where(scale < _TINY_SCALE, jnp.ones_like(scale), scale)
    if not spec.symmetric:
        zero = jnp.clip(jnp.round(low - smallest / scale), low, high)
    return scale, zero


def quantize_codes(weights: jax.Array, scale: jax.Array, zero: jax.Array,
                   spec: QuantSpec) -> jax.Array:
    """Integer codes (as floats) of ``weights`` under ``scale`` and ``zero`` (broadcast)."""
    low, high = spec.code_range
    return jnp.clip(jnp.round(weights / scale + zero), low, high)


def fake_quantize(weights: jax.Array, scale: jax.Array, zero: jax.Array,
                  spec: QuantSpec) -> jax.Array:
    """``weights`` rounded to the nearest representable value: ``scale * (q - zero)``."""
    return scale * (quantize_codes(weights, scale, zero, spec) - zero)
