"""Rotary position embeddings and the context-extension schemes checkpoints ask for.

``RopeScaling`` holds a Hugging Face ``rope_parameters`` (``rope_scaling``) entry; ``rope_tables``
turns positions into the cosine and sine tables the attention rotates queries and keys with.
Supported types, as transformers defines them: ``default``, ``linear`` (position interpolation),
``llama3`` (Llama 3.1 / 3.2: low frequencies divided by ``factor``, high ones kept, a smooth
ramp between) and ``yarn`` (YaRN: a ramp between interpolated and original frequencies by
rotation count, and an attention factor that scales the tables). ``dynamic`` NTK and
``longrope`` change the frequencies with the sequence length and are refused.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

ROPE_TYPES = ("default", "linear", "llama3", "yarn")
# The fields each type reads, beside rope_type (and rope_theta, kept in LlamaConfig).
_FIELDS = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
             "attention_factor", "mscale", "mscale_all_dim", "truncate"),
}

# The fields a type cannot do without (YaRN's factor defaults to context / original context).
_REQUIRED = {"linear": ("factor",), "llama3": _FIELDS["llama3"],
             "yarn": ("original_max_position_embeddings",)}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """One rotary scaling scheme, with the fields of Hugging Face's ``rope_parameters``.

    Attributes:
      rope_type: one of ``ROPE_TYPES``.
      factor: the context-extension factor (``linear``, ``llama3``, ``yarn``).
      low_freq_factor, high_freq_factor: ``llama3``'s wavelength thresholds, as fractions of
        ``original_max_position_embeddings``.
      original_max_position_embeddings: the pre-extension context (``llama3``, ``yarn``).
      beta_fast, beta_slow: ``yarn``'s rotation counts bounding the ramp (32 and 1 if unset).
      attention_factor: ``yarn``'s scale of the tables (from ``factor`` and ``mscale`` if
        unset).
      mscale, mscale_all_dim: ``yarn``'s DeepSeek-style attention-factor terms.
      truncate: ``yarn``: round the ramp's bounds to whole dimensions.
    """

    rope_type: str = "default"
    factor: float | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True

    def __post_init__(self):
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"config.rope_scaling.rope_type is {self.rope_type!r}; supported: "
                             f"{list(ROPE_TYPES)} (dynamic and longrope change with the sequence "
                             "length and are not implemented)")
        for name in _REQUIRED.get(self.rope_type, ()):
            if getattr(self, name) is None:
                raise ValueError(f"config.rope_scaling.{name} is required for rope_type "
                                 f"{self.rope_type!r}")
        for name in ("factor", "low_freq_factor", "high_freq_factor",
                     "original_max_position_embeddings"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"config.rope_scaling.{name} must be > 0, got {value!r}")
        if self.rope_type == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ValueError("config.rope_scaling.high_freq_factor must exceed low_freq_factor, "
                             f"got {self.high_freq_factor} and {self.low_freq_factor}")

    def to_hf_dict(self, rope_theta: float) -> dict[str, Any]:
        """The ``rope_parameters`` entry of a Hugging Face config."""
        fields = {name: getattr(self, name) for name in _FIELDS[self.rope_type]}
        return {"rope_type": self.rope_type, "rope_theta": rope_theta,
                **{k: v for k, v in fields.items() if v is not None}}


def rope_scaling_from_hf(entry: Mapping[str, Any] | None, field: str,
                         max_position_embeddings: int) -> RopeScaling | None:
    """Reads a config.json ``rope_scaling`` / ``rope_parameters`` entry (``None``: unscaled).

    Raises:
      ValueError: for an unsupported type or a field the type does not read, naming it.
    """
    entry = dict(entry or {})
    entry.pop("rope_theta", None)  # LlamaConfig.rope_theta
    if entry.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"config.json {field} has partial_rotary_factor "
                         f"{entry['partial_rotary_factor']!r}; only 1.0 (every dimension "
                         "rotated) is supported")
    entry.pop("partial_rotary_factor", None)
    rope_type = entry.pop("rope_type", entry.pop("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"config.json {field} has rope_type {rope_type!r}; supported: "
                         f"{list(ROPE_TYPES)}")
    unknown = sorted(set(entry) - set(_FIELDS[rope_type]))
    if unknown:
        raise ValueError(f"config.json {field} ({rope_type}) has fields this decoder does not "
                         f"implement: {unknown}")
    if rope_type == "default":
        return None
    if rope_type == "yarn" and entry.get("original_max_position_embeddings") is None:
        # transformers fills it in the same way (standardize_rope_params).
        entry["original_max_position_embeddings"] = max_position_embeddings
    return RopeScaling(rope_type=rope_type, **entry)


def _yarn_attention_factor(scaling: RopeScaling, factor: float) -> float:
    if scaling.attention_factor is not None:
        return float(scaling.attention_factor)

    def get_mscale(scale: float, mscale: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    if scaling.mscale and scaling.mscale_all_dim:
        return get_mscale(factor, scaling.mscale) / get_mscale(factor, scaling.mscale_all_dim)
    return get_mscale(factor)


def _yarn_frequencies(inv_freq: jax.Array, head_dim: int, theta: float, scaling: RopeScaling,
                      max_position_embeddings: int) -> tuple[jax.Array, float]:
    """YaRN: per dimension, a ramp (by how many turns the frequency makes over the original
    context) between the interpolated frequency (``/ factor``) and the original one."""
    original = scaling.original_max_position_embeddings
    factor = scaling.factor or max_position_embeddings / original

    def correction_dim(rotations: float) -> float:
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = correction_dim(scaling.beta_fast or 32)
    high = correction_dim(scaling.beta_slow or 1)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # as transformers does, against a zero-width ramp
    ramp = jnp.clip((jnp.arange(head_dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # the share of the original (extrapolated) frequency
    return (inv_freq / factor) * (1 - keep) + inv_freq * keep, _yarn_attention_factor(
        scaling, factor)


def _llama3_frequencies(inv_freq: jax.Array, scaling: RopeScaling) -> jax.Array:
    """Llama 3.1: wavelengths beyond ``original / low_freq_factor`` divided by ``factor``,
    those below ``original / high_freq_factor`` kept, a linear blend in between."""
    factor, original = scaling.factor, scaling.original_max_position_embeddings
    low, high = scaling.low_freq_factor, scaling.high_freq_factor
    wavelength = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelength > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= original / high) & (wavelength <= original / low)
    return jnp.where(medium, blended, scaled)


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None,
                        max_position_embeddings: int = 2048) -> tuple[jax.Array, float]:
    """The rotary inverse frequencies ``[head_dim / 2]`` (float32) and the factor the cosine and
    sine tables are multiplied by.

    Args:
      head_dim: the rotated width of one head.
      theta: the frequencies' base (``rope_theta``).
      scaling: a context-extension scheme, or ``None`` for the original RoPE.
      max_position_embeddings: the model's context (YaRN's factor when it has none).

    Returns:
      ``(inv_freq, attention_factor)``.

    References:
      Su et al. 2021 (RoFormer); Chen et al. 2023 (position interpolation); Peng et al. 2023
      (YaRN); Meta's Llama 3.1 release (llama3 scaling); transformers' ``ROPE_INIT_FUNCTIONS``.
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    kind = scaling.rope_type if scaling is not None else "default"
    if kind == "linear":
        return inv_freq / scaling.factor, 1.0
    if kind == "llama3":
        return _llama3_frequencies(inv_freq, scaling), 1.0
    if kind == "yarn":
        return _yarn_frequencies(inv_freq, head_dim, theta, scaling, max_position_embeddings)
    return inv_freq, 1.0


def rope_tables(positions: jax.Array, head_dim: int, theta: float,
                scaling: RopeScaling | None = None,
                max_position_embeddings: int = 2048) -> tuple[jax.Array, jax.Array]:
    """Cosine and sine tables ``[..., seq, head_dim]`` for rotate-half rotary embeddings.

    Args:
      positions: token positions ``[..., seq]``.
      head_dim, theta, scaling, max_position_embeddings: as ``inverse_frequencies`` takes them.

    Returns:
      ``(cos, sin)``, float32, scaled by the scheme's attention factor.
    """
    inv_freq, attention_factor = inverse_frequencies(head_dim, theta, scaling,
                                                     max_position_embeddings)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    if attention_factor == 1.0:
        return jnp.cos(angles), jnp.sin(angles)
    return jnp.cos(angles) * attention_factor, jnp.sin(angles) * attention_factor
