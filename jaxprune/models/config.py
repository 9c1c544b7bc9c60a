"""Configuration of the Llama family, with per-block widths for structurally pruned models."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from jaxprune.models.rope import RopeScaling, rope_scaling_from_hf

PerBlock = tuple[int, ...]
# The fields that hold one entry per block.
PER_BLOCK_FIELDS = ("num_heads", "num_kv_heads", "intermediate_size", "attention_windows")


def _per_block(name: str, value: int | tuple[int, ...] | list[int], num_layers: int) -> PerBlock:
    values = (value,) * num_layers if isinstance(value, int) else tuple(value)
    if len(values) != num_layers:
        raise ValueError(f"{name} has {len(values)} entries, but num_layers is {num_layers}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must hold positive integers, got {values}")
    return values


def _windows(value, num_layers: int) -> tuple[int | None, ...]:
    """Per-block attention windows: ``None`` (every block causal over the whole sequence), one
    window for all blocks, or one entry per block (``None`` for a full-attention block)."""
    values = (value,) * num_layers if value is None or isinstance(value, int) else tuple(value)
    if len(values) != num_layers:
        raise ValueError(f"config.attention_windows has {len(values)} entries, but num_layers "
                         f"is {num_layers}")
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError("config.attention_windows must hold positive integers or None, "
                             f"got {values}")
    return values


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama-family decoder.

    ``num_heads``, ``num_kv_heads`` and ``intermediate_size`` accept one int for all blocks or a
    tuple with one entry per block, since structured pruning makes blocks of different widths.
    They are stored as tuples.

    Attributes:
      vocab_size: number of tokens.
      hidden_size: width of the residual stream.
      num_layers: number of decoder blocks.
      num_heads: query heads per block.
      num_kv_heads: key/value heads per block (grouped-query attention); divides ``num_heads``.
      intermediate_size: SwiGLU channels per block.
      head_dim: width of one attention head (RoPE rotates all of it).
      rms_norm_eps: epsilon of every RMSNorm.
      rope_theta: base of the rotary frequencies.
      rope_scaling: a context-extension scheme for the rotary frequencies (Llama 3.1's
        ``llama3``, ``linear``, ``yarn``), or ``None``.
      tie_word_embeddings: whether the LM head reuses the token embedding.
      attention_bias: whether q, k and v projections carry biases (Qwen2 style; the output
        projection never does, unlike Hugging Face Llama's ``attention_bias``).
      qk_norm: whether each head's query and key pass an RMSNorm (weights ``[head_dim]``,
        shared by the heads) before RoPE, as in Qwen3.
      attention_windows: per block, how many keys each query attends (itself and the ones
        before it; Hugging Face's ``sliding_window``), or ``None`` for full causal attention.
        One value (or ``None``) for every block, or one entry per block (Mistral's and Qwen2's
        sliding windows, Gemma 3's local layers). Stored as a tuple.
      max_position_embeddings: context length the model was trained for (informational).
      bos_token_id: beginning-of-sequence token, if any.
      eos_token_id: end-of-sequence token, if any.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: PerBlock | int
    num_kv_heads: PerBlock | int
    intermediate_size: PerBlock | int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    rope_scaling: RopeScaling | None = None
    qk_norm: bool = False
    attention_windows: tuple[int | None, ...] | int | None = None

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"config.{name} must be a positive integer, got {value!r}")
        for name in ("num_heads", "num_kv_heads", "intermediate_size"):
            object.__setattr__(
                self, name, _per_block(f"config.{name}", getattr(self, name), self.num_layers)
            )
        for i, (heads, kv) in enumerate(zip(self.num_heads, self.num_kv_heads, strict=True)):
            if heads % kv:
                raise ValueError(
                    f"block {i}: config.num_heads ({heads}) must be a multiple of "
                    f"config.num_kv_heads ({kv}) for grouped-query attention"
                )
        object.__setattr__(self, "attention_windows",
                           _windows(self.attention_windows, self.num_layers))
        if not self.rms_norm_eps > 0:
            raise ValueError(f"config.rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        if not self.rope_theta > 0:
            raise ValueError(f"config.rope_theta must be > 0, got {self.rope_theta}")

    @property
    def is_uniform(self) -> bool:
        """True when every block has the same widths (what a Hugging Face config can say)."""
        return all(
            len(set(getattr(self, n))) == 1
            for n in ("num_heads", "num_kv_heads", "intermediate_size")
        )

    def replace(self, **changes: Any) -> LlamaConfig:
        """A copy with ``changes``. When ``num_layers`` changes, a per-block field that is not
        given and has one value in every block keeps that value in every new block."""
        if changes.get("num_layers", self.num_layers) != self.num_layers:
            for name in PER_BLOCK_FIELDS:
                values = set(getattr(self, name))
                if name not in changes and len(values) == 1:
                    changes[name] = values.pop()
        return dataclasses.replace(self, **changes)

    def select_blocks(self, blocks: Sequence[int]) -> LlamaConfig:
        """The config of a model made of ``blocks`` (indices, in order) of this one: every
        per-block field follows its block."""
        return self.replace(num_layers=len(blocks), **{
            name: tuple(getattr(self, name)[b] for b in blocks) for name in PER_BLOCK_FIELDS})

    def num_params(self, *, include_embeddings: bool = True) -> int:
        """Parameter count from the config alone.

        Args:
          include_embeddings: count the token embedding and an untied LM head.

        Returns:
          The number of parameters of a model built from this config.
        """
        h, d = self.hidden_size, self.head_dim
        total = h  # final norm
        for heads, kv, inter in zip(
            self.num_heads, self.num_kv_heads, self.intermediate_size, strict=True
        ):
            attn = h * heads * d * 2 + h * kv * d * 2
            if self.attention_bias:
                attn += heads * d + 2 * kv * d
            if self.qk_norm:
                attn += 2 * d
            total += attn + 3 * h * inter + 2 * h
        if include_embeddings:
            total += self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return total

    def hf_model_type(self) -> str:
        """The Hugging Face family with exactly this decoder's attention: Qwen2 has the q/k/v
        biases (Llama's ``attention_bias`` adds an output-projection bias too), Qwen3 the
        q/k norms, both any blocks' sliding windows; Mistral one window in every block.

        Raises:
          ValueError: for a decoder no family matches: q/k norms with q/k/v biases, windows of
            two sizes, or windowed and full blocks without biases or q/k norms.
        """
        if self.qk_norm and self.attention_bias:
            raise ValueError("no Hugging Face family has q/k norms with q/k/v biases only "
                             "(Qwen3's attention_bias also adds an output-projection bias)")
        windows = set(self.attention_windows)
        if len(windows - {None}) > 1:
            raise ValueError("a Hugging Face config has one sliding-window size; this model has "
                             f"attention_windows={self.attention_windows}")
        if self.qk_norm or self.attention_bias:
            return "qwen3" if self.qk_norm else "qwen2"
        if windows == {None}:
            return "llama"
        if None in windows:
            raise ValueError("Llama and Mistral attend alike in every block; this model mixes "
                             f"windowed and full blocks (attention_windows="
                             f"{self.attention_windows})")
        return "mistral"

    def _window_fields(self, model_type: str) -> dict[str, Any]:
        """The sliding-window fields of the family's config.json."""
        window = next((w for w in self.attention_windows if w is not None), None)
        if model_type == "mistral":
            return {"sliding_window": window}
        if model_type == "llama":
            return {}
        types = ["full_attention" if w is None else "sliding_attention"
                 for w in self.attention_windows]
        # transformers 4 reads no layer_types: its sliding blocks are those from
        # max_window_layers on, which says the same when the windowed blocks are the last.
        first = types.index("sliding_attention") if window is not None else self.num_layers
        return {"use_sliding_window": window is not None, "sliding_window": window,
                "max_window_layers": first, "layer_types": types}

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` of a Hugging Face causal LM with this shape.

        ``LlamaForCausalLM``, ``MistralForCausalLM`` with one window in every block,
        ``Qwen2ForCausalLM`` when the q/k/v projections have biases, or ``Qwen3ForCausalLM``
        with q/k norms (``hf_model_type``).

        Raises:
          ValueError: if blocks differ in width, which a Hugging Face Llama config cannot say,
            or for a decoder no family matches.
        """
        if not self.is_uniform:
            raise ValueError(
                "a Hugging Face Llama config needs the same widths in every block; this model "
                f"has num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"intermediate_size={self.intermediate_size}"
            )
        if self.hidden_size % self.num_heads[0]:
            # transformers' config validation refuses it, although head_dim is explicit.
            raise ValueError(
                f"transformers needs hidden_size ({self.hidden_size}) to be a multiple of the "
                f"number of attention heads ({self.num_heads[0]}); this model cannot be "
                "exported as a Hugging Face checkpoint")
        model_type = self.hf_model_type()
        return {
            "architectures": [_ARCHITECTURES[model_type]],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads[0],
            "num_key_value_heads": self.num_kv_heads[0],
            "intermediate_size": self.intermediate_size[0],
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            # The key transformers 4 reads; transformers 5 reads it too.
            **({"rope_scaling": self.rope_scaling.to_hf_dict(self.rope_theta)}
               if self.rope_scaling is not None else {}),
            "tie_word_embeddings": self.tie_word_embeddings,
            **_FAMILY_FIELDS[model_type],
            **self._window_fields(model_type),
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        }


# Fields of a Hugging Face config.json that this decoder reads, and those that may be present
# as long as they ask for nothing the decoder lacks.
_HF_IGNORED = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version",
    "initializer_range", "use_cache", "pad_token_id", "pretraining_tp", "_name_or_path",
    "auto_map", "output_attentions", "output_hidden_states", "return_dict", "is_decoder",
    "quantization_config", "max_window_layers", "sliding_window", "tokenizer_class",
    "attention_dropout", "bos_token_id", "eos_token_id", "rope_parameters", "rope_scaling",
    "use_sliding_window", "hidden_act", "mlp_bias", "layer_types",
    # Generic fields every transformers config carries; they change nothing in the decoder.
    "id2label", "label2id", "problem_type", "is_encoder_decoder", "chunk_size_feed_forward",
    "tie_encoder_decoder", "add_cross_attention", "cross_attention_hidden_size",
    "finetuning_task", "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params",
    "tf_legacy_loss", "use_bfloat16", "torchscript", "pruned_heads", "output_scores",
    "return_dict_in_generate",
}
_SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                  "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# Fields each family's export states so that transformers builds exactly this decoder.
_FAMILY_FIELDS = {
    "llama": {"attention_bias": False, "mlp_bias": False},
    "mistral": {},
    "qwen2": {},
    "qwen3": {"attention_bias": False},
}


def config_from_hf_dict(raw: Mapping[str, Any]) -> LlamaConfig:
    """Reads a Hugging Face ``config.json`` of a Llama, Mistral, Qwen2 or Qwen3 causal LM.

    Args:
      raw: the parsed JSON.

    Returns:
      The ``LlamaConfig``.

    Raises:
      ValueError: for another model type or a field asking for something this decoder does not
        implement (a RoPE type outside ``rope.ROPE_TYPES``, another activation, MLP biases,
        unknown fields), naming the field and its value.
    """
    model_type = raw.get("model_type")
    if model_type not in _SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"config.json model_type is {model_type!r}; supported: {list(_SUPPORTED_MODEL_TYPES)}"
        )
    if raw.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json hidden_act is {raw['hidden_act']!r}; only 'silu' is "
                         "supported (SwiGLU)")
    if model_type in ("llama", "qwen3") and raw.get("attention_bias", False):
        raise ValueError(f"config.json attention_bias is true; {model_type}'s attention bias "
                         "includes an output-projection bias, which this decoder lacks "
                         "(Qwen2-style q/k/v biases are supported: model_type 'qwen2')")
    if raw.get("mlp_bias", False):
        raise ValueError("config.json mlp_bias is true; MLP biases are not supported")
    rope_theta, rope_scaling = raw.get("rope_theta", 10000.0), None
    # transformers 5 writes "rope_parameters"; older versions "rope_scaling" (null if unused).
    for field in ("rope_scaling", "rope_parameters"):
        entry = raw.get(field) or {}
        rope_theta = entry.get("rope_theta", rope_theta)
        rope_scaling = rope_scaling_from_hf(entry, field, raw.get(
            "max_position_embeddings", 2048)) or rope_scaling
    known = {
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "intermediate_size", "head_dim", "rms_norm_eps", "rope_theta",
        "tie_word_embeddings", "attention_bias", "max_position_embeddings",
    }
    unknown = sorted(set(raw) - known - _HF_IGNORED)
    if unknown:
        raise ValueError(f"config.json has fields this decoder does not implement: {unknown}")
    heads = raw["num_attention_heads"]
    return LlamaConfig(
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        num_layers=raw["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=raw.get("num_key_value_heads") or heads,
        intermediate_size=raw["intermediate_size"],
        head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
        rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope_theta),
        tie_word_embeddings=raw.get("tie_word_embeddings", False),
        attention_bias=model_type == "qwen2",
        qk_norm=model_type == "qwen3",
        max_position_embeddings=raw.get("max_position_embeddings", 2048),
        bos_token_id=_single_id(raw.get("bos_token_id")),
        eos_token_id=_single_id(raw.get("eos_token_id")),
        rope_scaling=rope_scaling,
        attention_windows=_windows_from_hf(raw, model_type),
    )


def _windows_from_hf(raw: Mapping[str, Any], model_type: str) -> tuple[int | None, ...]:
    """Per-block attention windows of a config.json: Mistral's ``sliding_window`` in every
    block; Qwen2's and Qwen3's (with ``use_sliding_window``) in the blocks ``layer_types``
    marks ``sliding_attention`` (transformers' rule from ``max_window_layers`` without it).

    Raises:
      ValueError: for a Llama config with a window, or an unknown layer type.
    """
    num_layers = raw["num_hidden_layers"]
    window = raw.get("sliding_window")
    if model_type == "mistral":
        return (window,) * num_layers
    if model_type == "llama":
        if window is not None or raw.get("use_sliding_window", False):
            raise ValueError(f"config.json sliding_window is {window!r} for model_type "
                             "'llama', which has no sliding windows (model_type 'mistral' does)")
        return (None,) * num_layers
    if not raw.get("use_sliding_window", False) or window is None:
        return (None,) * num_layers
    first = raw.get("max_window_layers", num_layers)
    types = raw.get("layer_types") or [
        "sliding_attention" if i >= first else "full_attention" for i in range(num_layers)]
    unknown = sorted(set(types) - {"sliding_attention", "full_attention"})
    if unknown or len(types) != num_layers:
        raise ValueError(f"config.json layer_types must name sliding_attention or "
                         f"full_attention for each of the {num_layers} layers, got {types}")
    return tuple(window if t == "sliding_attention" else None for t in types)


def _single_id(value: Any) -> int | None:
    if isinstance(value, list):
        return value[0] if value else None
    return value
