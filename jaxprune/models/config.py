"""Configuration of the Llama family, with per-block widths for structurally pruned models."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from jaxprune.models.rope import RopeScaling, rope_scaling_from_hf

PerBlock = tuple[int, ...]
# The fields that hold one entry per block.
PER_BLOCK_FIELDS = ("num_heads", "num_kv_heads", "intermediate_size", "attention_windows")
# MLP activations by config name (Hugging Face's ``hidden_act`` / ``hidden_activation``).
ACTIVATIONS = ("silu", "gelu_tanh")
# The Gemma 3 decoder's fields, each of which no other family has.
_GEMMA_FEATURES = ("norm_plus_one", "sandwich_norms", "scale_embeddings")


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
      hidden_act: the MLP's gate activation: ``"silu"`` (SwiGLU) or ``"gelu_tanh"`` (GeGLU with
        the tanh approximation of GELU, Gemma's ``gelu_pytorch_tanh``).
      norm_plus_one: every RMSNorm scales by ``1 + w`` instead of ``w`` (Gemma; the stored
        weight is ``w``, zero at initialisation).
      sandwich_norms: each block also normalises the attention's and the MLP's outputs before
        adding them to the residual stream (Gemma 2 and 3: ``post_attention_layernorm`` is that
        output norm, ``pre_feedforward_layernorm`` the MLP's input norm).
      scale_embeddings: the token embedding is multiplied by ``sqrt(hidden_size)`` on input (not
        in the tied LM head), as in Gemma.
      query_pre_attn_scalar: attention logits are scaled by ``query_pre_attn_scalar ** -0.5``
        instead of ``head_dim ** -0.5`` (Gemma), or ``None``.
      rope_local_theta: RoPE base of the windowed blocks (Gemma 3's ``rope_local_base_freq``,
        never scaled), or ``None`` for one RoPE in every block.
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
    hidden_act: str = "silu"
    norm_plus_one: bool = False
    sandwich_norms: bool = False
    scale_embeddings: bool = False
    query_pre_attn_scalar: float | None = None
    rope_local_theta: float | None = None

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
        for name in ("rope_theta", "rope_local_theta", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"config.{name} must be > 0, got {value}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"config.hidden_act is {self.hidden_act!r}; allowed: "
                             f"{list(ACTIVATIONS)}")

    def rope_table(self, block: int) -> int:
        """The index of block ``block``'s RoPE table: 1 (local) for a windowed block of a
        model with ``rope_local_theta``, else 0."""
        local = self.rope_local_theta is not None and self.attention_windows[block] is not None
        return int(local)

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
            total += attn + 3 * h * inter + (4 if self.sandwich_norms else 2) * h
        if include_embeddings:
            total += self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return total

    def hf_model_type(self) -> str:
        """The Hugging Face family with exactly this decoder's attention: Qwen2 has the q/k/v
        biases (Llama's ``attention_bias`` adds an output-projection bias too), Qwen3 the
        q/k norms, both any blocks' sliding windows; Mistral one window in every block; Gemma 3
        (``gemma3_text``) the (1 + w) norms, sandwich norms, GeGLU and scaled embeddings.

        Raises:
          ValueError: for a decoder no family matches: q/k norms with q/k/v biases, windows of
            two sizes, windowed and full blocks without biases or q/k norms, or some of Gemma's
            features without the others.
        """
        windows = set(self.attention_windows)
        if len(windows - {None}) > 1:
            raise ValueError("a Hugging Face config has one sliding-window size; this model has "
                             f"attention_windows={self.attention_windows}")
        gemma = {name: getattr(self, name) for name in _GEMMA_FEATURES}
        gemma.update(qk_norm=self.qk_norm, gelu_tanh=self.hidden_act == "gelu_tanh",
                     no_attention_bias=not self.attention_bias)
        if any(getattr(self, name) for name in _GEMMA_FEATURES):
            lacking = sorted(name for name, value in gemma.items() if not value)
            if lacking:
                raise ValueError(f"Gemma 3 (the one family with {list(_GEMMA_FEATURES)}) also "
                                 f"needs {lacking}; no Hugging Face family has this decoder")
            return "gemma3_text"
        if self.hidden_act != "silu" or self.rope_local_theta is not None:
            raise ValueError("only Gemma 3 has hidden_act='gelu_tanh' or rope_local_theta, and "
                             f"this model lacks its {list(_GEMMA_FEATURES)}")
        if self.qk_norm and self.attention_bias:
            raise ValueError("no Hugging Face family has q/k norms with q/k/v biases only "
                             "(Qwen3's attention_bias also adds an output-projection bias)")
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
        if model_type == "gemma3_text":
            return {"sliding_window": window, "layer_types": types}
        # transformers 4 reads no layer_types: its sliding blocks are those from
        # max_window_layers on, which says the same when the windowed blocks are the last.
        first = types.index("sliding_attention") if window is not None else self.num_layers
        return {"use_sliding_window": window is not None, "sliding_window": window,
                "max_window_layers": first, "layer_types": types}

    def _gemma3_fields(self) -> dict[str, Any]:
        """The fields of a ``gemma3_text`` config.json beyond the shared ones."""
        if self.rope_local_theta is None and self.rope_scaling is not None and any(
                w is not None for w in self.attention_windows):
            raise ValueError("Gemma 3's windowed blocks rotate by an unscaled local RoPE; this "
                             "model has rope_scaling in every block (rope_local_theta is None)")
        return {
            "hidden_activation": "gelu_pytorch_tanh",
            # transformers' strict config takes an int: the value is one in every release.
            "query_pre_attn_scalar": _int_if_whole(self.query_pre_attn_scalar or self.head_dim),
            "rope_local_base_freq": self.rope_local_theta or self.rope_theta,
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
            "use_bidirectional_attention": False,
        }

    def to_hf_dict(self, torch_dtype: str = "float32") -> dict[str, Any]:
        """The ``config.json`` of a Hugging Face causal LM with this shape, its weights stored
        as ``torch_dtype``.

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
            **(self._gemma3_fields() if model_type == "gemma3_text" else {"hidden_act": "silu"}),
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": torch_dtype,
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
_SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                  "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                  "gemma3_text": "Gemma3ForCausalLM"}
# Fields each family's export states so that transformers builds exactly this decoder.
_FAMILY_FIELDS = {
    "llama": {"attention_bias": False, "mlp_bias": False},
    "mistral": {},
    "qwen2": {},
    "qwen3": {"attention_bias": False},
    "gemma3_text": {"attention_bias": False},
}


def config_from_hf_dict(raw: Mapping[str, Any]) -> LlamaConfig:
    """Reads a Hugging Face ``config.json`` of a Llama, Mistral, Qwen2, Qwen3 or Gemma 3 (text)
    causal LM.

    Args:
      raw: the parsed JSON.

    Returns:
      The ``LlamaConfig``.

    Raises:
      ValueError: for another model type or a field asking for something this decoder does not
        implement (a RoPE type outside ``rope.ROPE_TYPES``, another activation, MLP biases,
        logit soft-capping, unknown fields), naming the field and its value.
    """
    model_type = raw.get("model_type")
    if model_type == "gemma3":
        raise ValueError("config.json model_type is 'gemma3' (Gemma 3 with its vision tower); "
                         "jaxprune loads the text model alone: model_type 'gemma3_text' "
                         "(Gemma3ForCausalLM, e.g. gemma-3-270m and gemma-3-1b)")
    if model_type not in _SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"config.json model_type is {model_type!r}; supported: {list(_SUPPORTED_MODEL_TYPES)}"
        )
    if model_type in ("llama", "qwen3", "gemma3_text") and raw.get("attention_bias", False):
        raise ValueError(f"config.json attention_bias is true; {model_type}'s attention bias "
                         "includes an output-projection bias, which this decoder lacks "
                         "(Qwen2-style q/k/v biases are supported: model_type 'qwen2')")
    if raw.get("mlp_bias", False):
        raise ValueError("config.json mlp_bias is true; MLP biases are not supported")
    family, family_known = (_gemma3_from_hf(raw) if model_type == "gemma3_text"
                            else _llama_family_from_hf(raw, model_type))
    known = {
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "intermediate_size", "head_dim", "rms_norm_eps",
        "tie_word_embeddings", "attention_bias", "max_position_embeddings",
    } | family_known
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
        tie_word_embeddings=raw.get("tie_word_embeddings", model_type == "gemma3_text"),
        max_position_embeddings=raw.get("max_position_embeddings", 2048),
        bos_token_id=_single_id(raw.get("bos_token_id")),
        eos_token_id=_single_id(raw.get("eos_token_id")),
        **family,
    )


def _llama_family_from_hf(raw: Mapping[str, Any], model_type: str) -> tuple[dict, set]:
    """The fields of a Llama, Mistral, Qwen2 or Qwen3 config.json that differ between them, as
    ``LlamaConfig`` arguments, and the config.json fields read.

    Raises:
      ValueError: for another activation or an unsupported RoPE type.
    """
    if raw.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json hidden_act is {raw['hidden_act']!r}; {model_type} "
                         "supports only 'silu' (SwiGLU)")
    rope_theta, rope_scaling = raw.get("rope_theta", 10000.0), None
    # transformers 5 writes "rope_parameters"; older versions "rope_scaling" (null if unused).
    for field in ("rope_scaling", "rope_parameters"):
        entry = raw.get(field) or {}
        rope_theta = entry.get("rope_theta", rope_theta)
        rope_scaling = rope_scaling_from_hf(entry, field, raw.get(
            "max_position_embeddings", 2048)) or rope_scaling
    return {
        "rope_theta": float(rope_theta),
        "rope_scaling": rope_scaling,
        "attention_bias": model_type == "qwen2",
        "qk_norm": model_type == "qwen3",
        "attention_windows": _windows_from_hf(raw, model_type),
    }, {"rope_theta"}


# Gemma 3's RoPE bases when config.json names none (transformers' defaults).
_GEMMA3_THETA = {"full_attention": 1_000_000.0, "sliding_attention": 10_000.0}
# One global block after every five local ones: transformers' and llama.cpp's default.
GEMMA3_PATTERN = 6
GEMMA3_LOCAL_THETA = _GEMMA3_THETA["sliding_attention"]


def gemma3_layer_windows(num_layers: int, window: int | None,
                         pattern: int = GEMMA3_PATTERN) -> tuple[int | None, ...]:
    """Gemma 3's per-block windows when no ``layer_types`` say them: ``window`` in every
    block but each ``pattern``-th, which attends globally (``None``)."""
    return tuple(None if window is None or (i + 1) % pattern == 0 else window
                 for i in range(num_layers))


def _gemma3_from_hf(raw: Mapping[str, Any]) -> tuple[dict, set]:
    """The Gemma 3 fields of a ``gemma3_text`` config.json as ``LlamaConfig`` arguments, and
    the config.json fields read. Both RoPE spellings are read: transformers 4's ``rope_theta``,
    ``rope_local_base_freq`` and ``rope_scaling``, and transformers 5's ``rope_parameters`` with
    one entry per layer type.

    Raises:
      ValueError: for logit soft-capping, bidirectional attention, another activation, a
        scaled local RoPE, or unknown layer types, naming the field.
    """
    for field in ("final_logit_softcapping", "attn_logit_softcapping"):
        if raw.get(field) is not None:
            raise ValueError(f"config.json {field} is {raw[field]!r}; soft-capping (Gemma 2) "
                             "is not implemented: Gemma 3 sets it to null")
    if raw.get("use_bidirectional_attention"):
        raise ValueError("config.json use_bidirectional_attention is true (an encoder); "
                         "jaxprune's decoders are causal")
    act = raw.get("hidden_activation") or raw.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise ValueError(f"config.json hidden_activation is {act!r}; Gemma 3 supports only "
                         "'gelu_pytorch_tanh'")
    per_type = dict(raw.get("rope_parameters") or {})
    if "rope_type" in per_type or "rope_theta" in per_type:
        per_type = {"full_attention": per_type}  # one entry: the global blocks'
    if per_type and not set(per_type) <= set(_GEMMA3_THETA):
        raise ValueError("config.json rope_parameters must have an entry per layer type "
                         f"{sorted(_GEMMA3_THETA)}, got {sorted(per_type)}")
    full = dict(per_type.get("full_attention") or raw.get("rope_scaling") or {})
    full.setdefault("rope_theta", raw.get("rope_theta", _GEMMA3_THETA["full_attention"]))
    local = dict(per_type.get("sliding_attention") or {})
    local.setdefault("rope_theta", raw.get("rope_local_base_freq",
                                           _GEMMA3_THETA["sliding_attention"]))
    if rope_scaling_from_hf(local, "rope_parameters.sliding_attention", 0) is not None:
        raise ValueError("config.json rope_parameters.sliding_attention asks for RoPE scaling "
                         f"{local}; Gemma 3's local RoPE is unscaled")
    max_pos = raw.get("max_position_embeddings", 2048)
    return {
        "rope_theta": float(full["rope_theta"]),
        "rope_scaling": rope_scaling_from_hf(full, "rope_parameters.full_attention", max_pos),
        "rope_local_theta": float(local["rope_theta"]),
        "qk_norm": True,
        "hidden_act": "gelu_tanh",
        "norm_plus_one": True,
        "sandwich_norms": True,
        "scale_embeddings": True,
        "query_pre_attn_scalar": float(raw.get("query_pre_attn_scalar", 256)),
        "attention_windows": _gemma3_windows(raw),
    }, {"rope_theta", "rope_local_base_freq", "hidden_activation", "query_pre_attn_scalar",
        "final_logit_softcapping", "attn_logit_softcapping", "use_bidirectional_attention",
        "sliding_window_pattern", "_sliding_window_pattern", "cache_implementation"}


def _gemma3_windows(raw: Mapping[str, Any]) -> tuple[int | None, ...]:
    """Gemma 3's per-block windows: ``layer_types``, or one global block after every
    ``sliding_window_pattern - 1`` local ones (6 by default) as transformers derives them.

    Raises:
      ValueError: for unknown layer types or a count that is not one per block.
    """
    num_layers, window = raw["num_hidden_layers"], raw.get("sliding_window")
    types = raw.get("layer_types")
    if not types:
        pattern = raw.get("sliding_window_pattern",
                          raw.get("_sliding_window_pattern", GEMMA3_PATTERN))
        return gemma3_layer_windows(num_layers, window, pattern)
    if set(types) - set(_GEMMA3_THETA) or len(types) != num_layers:
        raise ValueError(f"config.json layer_types must name sliding_attention or "
                         f"full_attention for each of the {num_layers} layers, got {types}")
    return tuple(window if t == "sliding_attention" else None for t in types)


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


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _single_id(value: Any) -> int | None:
    if isinstance(value, list):
        return value[0] if value else None
    return value
