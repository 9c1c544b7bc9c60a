"""Real networks: the Flax NNX Llama family, GGUF and Hugging Face I/O, tokenizers."""

from jaxprune.models.config import LlamaConfig, config_from_hf_dict
from jaxprune.models.gguf_io import load_gguf, open_gguf, read_gguf, unpermute_rotary_rows
from jaxprune.models.hf_io import (
    EXPORT_DTYPES,
    export_dtype,
    load_hf_dir,
    open_hf_dir,
    save_hf_dir,
)
from jaxprune.models.lazy import LazyModel, block_hf_tensor_sources
from jaxprune.models.llama import Llama, abstract_llama
from jaxprune.models.registry import (
    PACKAGED_MODELS,
    RANDOM_MODELS,
    PackagedModel,
    load,
    model_cache_dir,
    open_model,
    packaged_model_path,
)
from jaxprune.models.rope import ROPE_TYPES, RopeScaling, inverse_frequencies, rope_tables
from jaxprune.models.tokenizer import Tokenizer, byte_tokenizer
from jaxprune.models.weights import (
    hf_tensors_from_model,
    hf_tensors_of_state,
    model_from_hf_tensors,
)

__all__ = [
    "EXPORT_DTYPES",
    "PACKAGED_MODELS",
    "RANDOM_MODELS",
    "ROPE_TYPES",
    "LazyModel",
    "Llama",
    "LlamaConfig",
    "PackagedModel",
    "RopeScaling",
    "Tokenizer",
    "abstract_llama",
    "block_hf_tensor_sources",
    "byte_tokenizer",
    "config_from_hf_dict",
    "export_dtype",
    "hf_tensors_from_model",
    "hf_tensors_of_state",
    "inverse_frequencies",
    "load",
    "load_gguf",
    "load_hf_dir",
    "model_cache_dir",
    "model_from_hf_tensors",
    "open_gguf",
    "open_hf_dir",
    "open_model",
    "packaged_model_path",
    "read_gguf",
    "rope_tables",
    "save_hf_dir",
    "unpermute_rotary_rows",
]
