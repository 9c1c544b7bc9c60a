"""Writing GGUF files (llama.cpp's format): the ``llama``, ``qwen2`` and ``qwen3`` architectures,
dense, masked or structurally cut, with F32, F16, Q8_0 or Q4_0 weights and the tokenizer.

The inverse of ``gguf_io``: Hugging Face names become llama.cpp's, the q and k rows of a
``llama`` model are permuted back into llama.cpp's interleaved order, and per-block widths (a
structured cut) are written as per-block arrays, which llama.cpp reads for head counts and
feed-forward lengths. Matrices are quantized by the ``gguf`` package's own quantizers, in
blocks of 32 inputs; one whose input size is not a multiple of 32 stays F16 (llama.cpp's
``quantize`` falls back likewise). Norms and biases stay F32. Zero is exact in Q8_0 and Q4_0,
so a pruned model's zeros stay zeros.

The tokenizer is written as byte-level BPE (``tokenizer.ggml.model`` gpt2) with the
pre-tokenizer name whose definition matches (``smollm`` for SmolLM2). gguf's writer leaves an
empty merges array out, which llama.cpp refuses: the byte tokenizer of the random test models
(no merges) reads back in jaxprune and transformers, not in llama.cpp.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

import numpy as np

from jaxprune.models.gguf_file import import_gguf
from jaxprune.models.gguf_io import _BLOCK_NAMES, _GLOBAL_NAMES, _PERMUTED_ROTARY
from jaxprune.models.llama import Llama
from jaxprune.models.tokenizer import GGUF_PRE_TOKENIZERS, Tokenizer
from jaxprune.models.weights import hf_tensors_from_model

TENSOR_TYPES = ("F32", "F16", "Q8_0", "Q4_0")
# Hugging Face model type -> GGUF general.architecture.
EXPORT_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
# Inputs per block of the quantized types (llama.cpp's QK8_0 and QK4_0).
_QUANT_BLOCK = 32
_HF_BLOCK_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_GGUF_OF_HF_BLOCK = {hf: gguf for gguf, hf in _BLOCK_NAMES.items()}
_GGUF_OF_HF_GLOBAL = {hf: gguf for gguf, hf in _GLOBAL_NAMES.items()}
# llama.cpp token types.
_NORMAL, _CONTROL = 1, 3


def gguf_architecture(model: Llama) -> str:
    """The GGUF architecture a model is written as.

    Raises:
      ValueError: for a family the export does not write (Gemma 3, Mistral's windows), or RoPE
        scaling other than linear.
    """
    family = model.config.hf_model_type()
    if family not in EXPORT_ARCHITECTURES:
        raise ValueError(f"GGUF export writes the {sorted(EXPORT_ARCHITECTURES)} families; "
                         f"this model is {family!r}")
    scaling = model.config.rope_scaling
    if scaling is not None and scaling.rope_type != "linear":
        raise ValueError(f"GGUF export writes RoPE scaling 'linear' or none; this model has "
                         f"{scaling.rope_type!r} (llama.cpp keeps it in a rope_freqs tensor, "
                         f"not written here)")
    return EXPORT_ARCHITECTURES[family]


def gguf_name_of_hf_tensor(name: str) -> str:
    """llama.cpp's name for a Hugging Face tensor name (``model.layers.3.mlp.up_proj.weight``
    -> ``blk.3.ffn_up.weight``)."""
    if name in _GGUF_OF_HF_GLOBAL:
        return _GGUF_OF_HF_GLOBAL[name]
    match = _HF_BLOCK_RE.match(name)
    if not match or match.group(2) not in _GGUF_OF_HF_BLOCK:
        raise ValueError(f"tensor {name!r} has no GGUF name")
    layer, kind, suffix = match.groups()
    return f"blk.{layer}.{_GGUF_OF_HF_BLOCK[kind]}.{suffix}"


def permute_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (the inverse of ``gguf_io.unpermute_rotary_rows``): each
    head's rows ``[first half, second half]`` become interleaved pairs."""
    head_dim = weight.shape[0] // num_heads
    return (weight.reshape(num_heads, 2, head_dim // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _encode_tensor(gguf, array: np.ndarray, tensor_type: str) -> tuple[np.ndarray, object]:
    """``(data, ggml type)`` of one tensor: 1-D ones in F32, matrices in ``tensor_type`` (F16
    when their rows do not split into blocks of 32)."""
    kinds = gguf.GGMLQuantizationType
    if array.ndim == 1 or tensor_type == "F32":
        return array.astype(np.float32), kinds.F32
    if tensor_type == "F16" or array.shape[-1] % _QUANT_BLOCK:
        return array.astype(np.float16), kinds.F16
    kind = getattr(kinds, tensor_type)
    return gguf.quants.quantize(array.astype(np.float32), kind), kind


def _rotary_heads(model: Llama, name: str) -> int | None:
    """Heads of a llama q/k projection whose rows llama.cpp permutes, else ``None``."""
    match = _HF_BLOCK_RE.match(name)
    if match is None or match.group(2) not in ("self_attn.q_proj", "self_attn.k_proj"):
        return None
    layer = int(match.group(1))
    heads = (model.config.num_heads if match.group(2) == "self_attn.q_proj"
             else model.config.num_kv_heads)
    return heads[layer]


def _scalar_or_blocks(values: tuple[int, ...]) -> int | list[int]:
    return values[0] if len(set(values)) == 1 else list(values)


def _write_hyperparameters(writer, gguf, model: Llama, name: str) -> None:
    """The ``<arch>.*`` keys ``gguf_io`` and llama.cpp read back."""
    config = model.config
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_layers)
    writer.add_feed_forward_length(_scalar_or_blocks(config.intermediate_size))
    writer.add_head_count(_scalar_or_blocks(config.num_heads))
    writer.add_head_count_kv(_scalar_or_blocks(config.num_kv_heads))
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if config.rope_scaling is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config.rope_scaling.factor)


def gguf_pre_tokenizer(tokenizer: Tokenizer) -> str:
    """The ``tokenizer.ggml.pre`` name whose definition (``GGUF_PRE_TOKENIZERS``) equals the
    tokenizer's pre-tokenizer; ``gpt2`` for a byte-level vocabulary without merges, whose ids
    no split can change (the byte tokenizer of the random models).

    Raises:
      ValueError: when none does.
    """
    definition = json.loads(tokenizer.backend.to_str())
    own = definition.get("pre_tokenizer")
    for name, make in GGUF_PRE_TOKENIZERS.items():
        if json.loads(make().__getstate__()) == own:
            return name
    if not definition["model"].get("merges") and (own or {}).get("type") == "ByteLevel":
        return "gpt2"
    raise ValueError(f"the tokenizer's pre-tokenizer matches none llama.cpp names here "
                     f"({sorted(GGUF_PRE_TOKENIZERS)}); it cannot be written to GGUF")


def gguf_tokenizer_fields(tokenizer: Tokenizer, vocab_size: int) -> dict:
    """The ``tokenizer.ggml.*`` fields of a byte-level BPE tokenizer (model ``gpt2``).

    Raises:
      ValueError: for another tokenizer model or pre-tokenizer, or a vocabulary whose ids are
        not 0..V-1 within the model's ``vocab_size`` embeddings.
    """
    definition = json.loads(tokenizer.backend.to_str())
    bpe = definition["model"]
    if bpe.get("type") != "BPE" or (definition.get("decoder") or {}).get("type") != "ByteLevel":
        raise ValueError("GGUF export writes byte-level BPE tokenizers (tokenizer.ggml.model "
                         "'gpt2'); this one is not")
    by_id = {i: token for token, i in tokenizer.backend.get_vocab(with_added_tokens=True).items()}
    if sorted(by_id) != list(range(len(by_id))) or len(by_id) > vocab_size:
        raise ValueError(f"the tokenizer's ids are not 0..{len(by_id) - 1} within the model's "
                         f"{vocab_size} embeddings")
    special = {t["id"] for t in definition.get("added_tokens", []) if t.get("special")}
    return {"pre": gguf_pre_tokenizer(tokenizer),
            "tokens": [by_id[i] for i in range(len(by_id))],
            "types": [_CONTROL if i in special else _NORMAL for i in range(len(by_id))],
            "merges": [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]}


def _write_tokenizer(writer, tokenizer: Tokenizer, fields: dict) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(fields["pre"])
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    writer.add_token_merges(fields["merges"])
    if tokenizer.bos_id is not None:
        writer.add_bos_token_id(tokenizer.bos_id)
    if tokenizer.eos_id is not None:
        writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_add_bos_token(tokenizer.add_bos)


def check_gguf_export(model: Llama, tokenizer: Tokenizer | None, tensor_type: str) -> dict:
    """Every check of ``save_gguf``, before anything is computed or written.

    Returns:
      The tokenizer's GGUF fields (empty without a tokenizer).

    Raises:
      ValueError: for an unknown type, or a family, RoPE scaling or tokenizer the export does
        not write.
    """
    if tensor_type not in TENSOR_TYPES:
        raise ValueError(f"tensor_type must be one of {TENSOR_TYPES}, got {tensor_type!r}")
    gguf_architecture(model)
    if tokenizer is None:
        return {}
    return gguf_tokenizer_fields(tokenizer, model.config.vocab_size)


def _add_tensors(writer, gguf, model: Llama, arch: str, tensor_type: str) -> dict[str, int]:
    """Adds every parameter; returns how many tensors were written in each type."""
    counts: dict[str, int] = {}
    for name, array in hf_tensors_from_model(model).items():
        heads = _rotary_heads(model, name) if arch in _PERMUTED_ROTARY else None
        if heads is not None:
            array = permute_rotary_rows(array, heads)
        data, kind = _encode_tensor(gguf, array, tensor_type)
        writer.add_tensor(gguf_name_of_hf_tensor(name), data, raw_dtype=kind)
        counts[kind.name] = counts.get(kind.name, 0) + 1
    return counts


def save_gguf(model: Llama, path: str, *, tokenizer: Tokenizer | None = None,
              tensor_type: str = "F16", name: str = "jaxprune export") -> dict[str, int]:
    """Writes ``model`` (dense, masked or cut) as a GGUF file that llama.cpp and transformers'
    GGUF loader read, atomically (a temporary file beside ``path``, renamed at the end).

    Args:
      model: a ``llama``, ``qwen2`` or ``qwen3`` family model.
      path: the ``.gguf`` file to write; must not exist yet.
      tokenizer: a byte-level BPE tokenizer to write with it, or ``None`` (weights only).
      tensor_type: ``TENSOR_TYPES``: the type of every matrix (norms and biases stay F32;
        matrices whose rows do not split into blocks of 32 stay F16).
      name: ``general.name``.

    Returns:
      How many tensors were written in each GGML type (``{"Q4_0": 210, "F32": 61, ...}``).

    Raises:
      ValueError: for an unknown type, a family or tokenizer the export does not write
        (before anything is written).
      FileExistsError: if ``path`` exists.
    """
    fields = check_gguf_export(model, tokenizer, tensor_type)
    arch = gguf_architecture(model)
    if os.path.exists(path):
        raise FileExistsError(f"GGUF file already exists: {path}")
    gguf = import_gguf()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".export-", suffix=".gguf", dir=directory)
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(staging, arch)
        _write_hyperparameters(writer, gguf, model, name)
        if tokenizer is not None:
            _write_tokenizer(writer, tokenizer, fields)
        counts = _add_tensors(writer, gguf, model, arch, tensor_type)
        writer.add_file_type(_FILE_TYPES[tensor_type])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise
    return counts


# general.file_type (llama.cpp's LLAMA_FTYPE): the type most of the file's tensors have.
_FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7}
