"""Loading GGUF files (llama.cpp's format) of the ``llama``, ``qwen2``, ``qwen3`` and ``gemma3``
architectures into the NNX model.

Every tensor is dequantized to float32 with the ``gguf`` package. For ``llama``, llama.cpp's
converter permutes the rows of the q and k projections so that its rotary kernel can rotate
adjacent pairs; the permutation is undone here, so that the weights equal the Hugging Face
checkpoint and the standard rotate-half RoPE applies. Qwen2, Qwen3 and Gemma 3 files keep
Hugging Face's row order. Gemma's converter stores every norm weight as ``1 + w`` (llama.cpp
scales by the stored weight); ``w`` is restored here.

What a Gemma 3 GGUF leaves out, llama.cpp fixes in code, and so does this loader: one global
block after every five local ones, the local blocks' RoPE base 10,000, and the attention scale
``head_dim ** -0.5`` (``(hidden / heads) ** -0.5`` for the 62-block 27B model).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping

import jax.numpy as jnp
import numpy as np

from jaxprune.models.config import GEMMA3_LOCAL_THETA, LlamaConfig, gemma3_layer_windows
from jaxprune.models.gguf_file import dequantize, import_gguf, read_gguf_file
from jaxprune.models.lazy import LazyModel
from jaxprune.models.llama import Llama
from jaxprune.models.rope import RopeScaling
from jaxprune.models.tokenizer import Tokenizer, tokenizer_from_gguf_fields
from jaxprune.models.weights import check_finite, model_from_hf_tensors

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")
# Architectures whose q/k rows llama.cpp's converter permutes.
_PERMUTED_ROTARY = ("llama",)
# Gemma 3 27B, whose attention scale llama.cpp takes from hidden / heads (src/llama-model.cpp).
_GEMMA3_27B_BLOCKS = 62

_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
# Gemma's four norms per block: ffn_norm is the MLP's input norm, which Hugging Face's Gemma
# calls pre_feedforward_layernorm (its post_attention_layernorm is the attention output's norm).
_GEMMA_BLOCK_NAMES = {
    **_BLOCK_NAMES,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def hf_name_of_gguf_tensor(name: str, architecture: str = "llama") -> str | None:
    """Hugging Face name of a GGUF tensor of ``architecture``, or ``None`` for tensors the
    model does not use."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    names = _GEMMA_BLOCK_NAMES if architecture == "gemma3" else _BLOCK_NAMES
    match = _BLOCK_RE.match(name)
    if match and match.group(2) in names:
        layer, kind, suffix = match.groups()
        return f"model.layers.{layer}.{names[kind]}.{suffix}"
    return None


def unpermute_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverts llama.cpp's q/k row permutation (weights ``[out, in]`` or biases ``[out]``).

    llama.cpp regroups each head's rows from ``[first half, second half]`` to interleaved
    pairs; this restores the halves.
    """
    rows = weight.shape[0]
    head_dim = rows // num_heads
    return (
        weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _config_from_metadata(metadata: dict, path: str, names: set[str]) -> LlamaConfig:
    arch = metadata["general.architecture"]
    def need(key):
        value = metadata.get(f"{arch}.{key}")
        if value is None:
            raise ValueError(f"{path}: GGUF metadata lacks {arch}.{key}")
        return value

    hidden = int(need("embedding_length"))
    heads = need("attention.head_count")
    heads = tuple(int(h) for h in heads) if isinstance(heads, list) else int(heads)
    kv = metadata.get(f"{arch}.attention.head_count_kv", heads)
    kv = tuple(int(h) for h in kv) if isinstance(kv, list) else int(kv)
    inter = need("feed_forward_length")
    inter = tuple(int(i) for i in inter) if isinstance(inter, list) else int(inter)
    first_heads = heads if isinstance(heads, int) else heads[0]
    head_dim = metadata.get(f"{arch}.attention.key_length",
                            metadata.get(f"{arch}.rope.dimension_count", hidden // first_heads))
    tokens = metadata.get("tokenizer.ggml.tokens")
    family = (_gemma3_fields(metadata, int(need("block_count")), hidden, first_heads,
                             int(head_dim)) if arch == "gemma3" else {})
    return LlamaConfig(
        vocab_size=int(metadata.get(f"{arch}.vocab_size", len(tokens or []))),
        hidden_size=hidden,
        num_layers=int(need("block_count")),
        num_heads=heads,
        num_kv_heads=kv,
        intermediate_size=inter,
        head_dim=int(head_dim),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_theta=float(metadata.get(f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(metadata, arch, path),
        tie_word_embeddings="output.weight" not in names,
        attention_bias=any(n.endswith("attn_q.bias") for n in names),
        qk_norm=any(n.endswith("attn_q_norm.weight") for n in names),
        max_position_embeddings=int(metadata.get(f"{arch}.context_length", 2048)),
        bos_token_id=_maybe_int(metadata.get("tokenizer.ggml.bos_token_id")),
        eos_token_id=_maybe_int(metadata.get("tokenizer.ggml.eos_token_id")),
        **family,
    )


def _rope_scaling(metadata: dict, arch: str, path: str) -> RopeScaling | None:
    """The RoPE scaling a GGUF states: none, or ``linear`` with its factor (Gemma 3 1B and up).

    Raises:
      ValueError: for another scaling type.
    """
    kind = metadata.get(f"{arch}.rope.scaling.type")
    if kind in (None, "none"):
        return None
    if kind != "linear":
        raise ValueError(f"{path}: GGUF {arch}.rope.scaling.type is {kind!r}; supported: "
                         "'none', 'linear'")
    return RopeScaling(rope_type="linear",
                       factor=float(metadata[f"{arch}.rope.scaling.factor"]))


def _gemma3_fields(metadata: dict, num_layers: int, hidden: int, heads: int,
                   head_dim: int) -> dict:
    """The Gemma 3 ``LlamaConfig`` fields llama.cpp derives rather than reads."""
    window = metadata.get("gemma3.attention.sliding_window")
    windows = gemma3_layer_windows(num_layers, None if window is None else int(window))
    scalar = hidden // heads if num_layers == _GEMMA3_27B_BLOCKS else head_dim
    return {"hidden_act": "gelu_tanh", "norm_plus_one": True,
            "sandwich_norms": True, "scale_embeddings": True,
            "query_pre_attn_scalar": float(scalar), "rope_local_theta": GEMMA3_LOCAL_THETA,
            "attention_windows": windows}


def _check_every_tensor_maps(tensors, arch: str, path: str) -> None:
    """Refuses, before any dequantization, a file with tensors the model would not use.

    Raises:
      ValueError: naming the tensors; for Llama 3.1's ``rope_freqs.weight`` (its llama3 RoPE
        scaling as per-frequency factors, whose parameters the file does not state), saying
        to load the Hugging Face checkpoint instead.
    """
    unmapped = [t.name for t in tensors if hf_name_of_gguf_tensor(t.name, arch) is None]
    if "rope_freqs.weight" in unmapped:
        raise ValueError(f"{path}: GGUF tensor rope_freqs.weight holds per-frequency RoPE "
                         "factors (llama.cpp's form of Llama 3.1's 'llama3' scaling) without "
                         "the parameters jaxprune's RoPE needs; load the model's Hugging Face "
                         "directory (config.json with rope_scaling) instead")
    if unmapped:
        raise ValueError(f"{path}: GGUF tensors that no {arch} model parameter maps to: "
                         f"{unmapped[:6]}{' ...' if len(unmapped) > 6 else ''}")


def _maybe_int(value) -> int | None:
    return None if value is None else int(value)


def read_gguf(path: str) -> tuple[LlamaConfig, dict[str, np.ndarray], Tokenizer]:
    """Reads config, float32 tensors in Hugging Face names and layout, and the tokenizer:
    ``open_gguf_tensors`` with every tensor dequantized now, in file order (so the first
    corrupt tensor in the file is the one named).
    """
    config, tensors, tokenizer = open_gguf_tensors(path)
    return config, dict(tensors.items()), tokenizer


def open_gguf_tensors(path: str) -> tuple[LlamaConfig, GGUFTensors, Tokenizer]:
    """``read_gguf`` without dequantizing: the tensors come as a ``GGUFTensors`` mapping that
    reads and dequantizes each when it is looked up.

    Args:
      path: a ``.gguf`` file of a ``SUPPORTED_ARCHITECTURES`` model.

    Returns:
      ``(config, tensors, tokenizer)``; the tokenizer is ``None`` when the file has no
      vocabulary.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: for another architecture, RoPE scaling, or missing metadata; a tensor
        holding NaN or inf once dequantized when it is looked up.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    import_gguf()  # a clear ImportError before any work
    try:
        gguf_file = read_gguf_file(path)
    except ValueError as err:  # UnicodeDecodeError (a corrupt string) included
        raise ValueError(f"{path} is not a readable GGUF file: {err}") from err
    metadata = gguf_file.metadata
    arch = metadata.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"{path}: GGUF general.architecture is {arch!r}; supported: "
                         f"{list(SUPPORTED_ARCHITECTURES)}")
    _check_every_tensor_maps(gguf_file.tensors, arch, path)
    config = _config_from_metadata(metadata, path, {t.name for t in gguf_file.tensors})
    tensors = GGUFTensors(path, arch, config, gguf_file.tensors)
    if metadata.get("tokenizer.ggml.tokens") is None:
        return config, tensors, None  # weights only (a converter may leave the vocabulary out)
    tokenizer = tokenizer_from_gguf_fields(
        model=metadata.get("tokenizer.ggml.model"),
        pre=metadata.get("tokenizer.ggml.pre", "gpt2"),
        tokens=metadata.get("tokenizer.ggml.tokens"),
        token_types=metadata.get("tokenizer.ggml.token_type"),
        merges=metadata.get("tokenizer.ggml.merges"),
        bos_id=config.bos_token_id,
        eos_id=config.eos_token_id,
        architecture=arch,
        # llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
        add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token",
                                  metadata.get("tokenizer.ggml.model") == "llama")),
    )
    return config, tensors, tokenizer


class GGUFTensors(Mapping):
    """Hugging Face name -> float32 array in Hugging Face layout, read from the GGUF file and
    dequantized when looked up (a new array each time; file order)."""

    def __init__(self, path: str, architecture: str, config: LlamaConfig, tensors):
        self._path, self._arch, self._config = path, architecture, config
        self._tensors = {hf_name_of_gguf_tensor(t.name, architecture): t for t in tensors}

    def __contains__(self, hf: object) -> bool:
        # Mapping's default looks the name up, which would read and dequantize the tensor.
        return hf in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __getitem__(self, hf: str) -> np.ndarray:
        tensor = self._tensors[hf]
        # Read into memory of its own (freed with the array), not through the file's map,
        # whose pages would stay resident in the process once touched.
        raw = np.fromfile(self._path, dtype=tensor.data.dtype, count=tensor.data.size,
                          offset=tensor.offset).reshape(tensor.data.shape)
        array = dequantize(dataclasses.replace(tensor, data=raw))
        check_finite(f"{tensor.name} ({hf}) in {self._path}", array)
        # A (1 + w) norm is stored as 1 + w by llama.cpp's converter.
        if self._config.norm_plus_one and hf.endswith("norm.weight"):
            array = array - 1.0
        match = _BLOCK_RE.match(tensor.name)
        if self._arch in _PERMUTED_ROTARY and match and match.group(2) in ("attn_q", "attn_k"):
            layer = int(match.group(1))
            heads = (self._config.num_heads if match.group(2) == "attn_q"
                     else self._config.num_kv_heads)
            array = unpermute_rotary_rows(array, heads[layer])
        return array


def open_gguf(path: str, *, param_dtype=jnp.float32) -> tuple[LazyModel, Tokenizer | None]:
    """A GGUF file opened lazily (header read, no tensor): ``(LazyModel, tokenizer)``, each
    tensor dequantized to ``param_dtype`` when the model asks for its block.

    Raises:
      FileNotFoundError, ValueError: as ``read_gguf`` (a corrupt tensor when it is read).
    """
    config, tensors, tokenizer = open_gguf_tensors(path)
    return LazyModel(config, tensors, param_dtype), tokenizer


def load_gguf(path: str, *, param_dtype=jnp.float32) -> tuple[Llama, Tokenizer]:
    """Loads a GGUF (``SUPPORTED_ARCHITECTURES``) into the NNX model, dequantized to
    ``param_dtype``.

    Args:
      path: the ``.gguf`` file.
      param_dtype: dtype of the model's parameters.

    Returns:
      ``(model, tokenizer)`` (``None`` without a vocabulary).

    Raises:
      FileNotFoundError, ValueError: see ``read_gguf``.
    """
    config, tensors, tokenizer = read_gguf(path)
    return model_from_hf_tensors(config, tensors, param_dtype=param_dtype), tokenizer
