"""Loading GGUF files (llama.cpp's format) of the ``llama``, ``qwen2`` and ``qwen3``
architectures into the NNX model.

Every tensor is dequantized to float32 with the ``gguf`` package. For ``llama``, llama.cpp's
converter permutes the rows of the q and k projections so that its rotary kernel can rotate
adjacent pairs; the permutation is undone here, so that the weights equal the Hugging Face
checkpoint and the standard rotate-half RoPE applies. Qwen2 and Qwen3 files keep Hugging Face's
row order.
"""

from __future__ import annotations

import os
import re

import jax.numpy as jnp
import numpy as np

from jaxprune.models.config import LlamaConfig
from jaxprune.models.gguf_file import import_gguf, read_gguf_file
from jaxprune.models.llama import Llama
from jaxprune.models.tokenizer import Tokenizer, tokenizer_from_gguf_fields
from jaxprune.models.weights import check_finite, model_from_hf_tensors

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")
# Architectures whose q/k rows llama.cpp's converter permutes.
_PERMUTED_ROTARY = ("llama",)

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
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def hf_name_of_gguf_tensor(name: str) -> str | None:
    """Hugging Face name of a GGUF tensor, or ``None`` for tensors the model does not use."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    match = _BLOCK_RE.match(name)
    if match and match.group(2) in _BLOCK_NAMES:
        layer, kind, suffix = match.groups()
        return f"model.layers.{layer}.{_BLOCK_NAMES[kind]}.{suffix}"
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
    arch = metadata.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{path}: GGUF general.architecture is {arch!r}; supported: "
            f"{list(SUPPORTED_ARCHITECTURES)}"
        )
    scaling = metadata.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ValueError(f"{path}: GGUF asks for RoPE scaling {scaling!r}; not supported")

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
        tie_word_embeddings="output.weight" not in names,
        attention_bias=any(n.endswith("attn_q.bias") for n in names),
        qk_norm=any(n.endswith("attn_q_norm.weight") for n in names),
        max_position_embeddings=int(metadata.get(f"{arch}.context_length", 2048)),
        bos_token_id=_maybe_int(metadata.get("tokenizer.ggml.bos_token_id")),
        eos_token_id=_maybe_int(metadata.get("tokenizer.ggml.eos_token_id")),
    )


def _maybe_int(value) -> int | None:
    return None if value is None else int(value)


def read_gguf(path: str) -> tuple[LlamaConfig, dict[str, np.ndarray], Tokenizer]:
    """Reads config, float32 tensors in Hugging Face names and layout, and the tokenizer.

    Args:
      path: a ``.gguf`` file of a ``SUPPORTED_ARCHITECTURES`` model.

    Returns:
      ``(config, tensors, tokenizer)``; the tokenizer is ``None`` when the file has no
      vocabulary.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: for another architecture, RoPE scaling, or missing metadata, or for the
        first tensor (in file order) holding NaN or inf once dequantized (corrupt bytes).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    gguf = import_gguf()
    try:
        gguf_file = read_gguf_file(path)
    except ValueError as err:  # UnicodeDecodeError (a corrupt string) included
        raise ValueError(f"{path} is not a readable GGUF file: {err}") from err
    metadata = gguf_file.metadata
    config = _config_from_metadata(metadata, path, {t.name for t in gguf_file.tensors})
    permuted = metadata["general.architecture"] in _PERMUTED_ROTARY
    tensors = {}
    for tensor in gguf_file.tensors:
        hf = hf_name_of_gguf_tensor(tensor.name)
        if hf is None:
            continue
        array = gguf.quants.dequantize(tensor.data, tensor.ggml_type).astype(np.float32)
        check_finite(f"{tensor.name} ({hf}) in {path}", array)
        match = _BLOCK_RE.match(tensor.name)
        if permuted and match and match.group(2) in ("attn_q", "attn_k"):
            layer = int(match.group(1))
            heads = (config.num_heads if match.group(2) == "attn_q" else config.num_kv_heads)
            array = unpermute_rotary_rows(array, heads[layer])
        tensors[hf] = array
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
    )
    return config, tensors, tokenizer


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
