"""Hugging Face checkpoint directories: ``config.json``, safetensors (single or sharded) and
``tokenizer.json``, loaded into and exported from the NNX model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from jaxprune.models.config import config_from_hf_dict
from jaxprune.models.lazy import LazyModel
from jaxprune.models.llama import Llama
from jaxprune.models.safetensors_file import SafetensorsTensors, read_safetensors
from jaxprune.models.tokenizer import Tokenizer
from jaxprune.models.weights import hf_tensors_from_model, model_from_hf_tensors
from jaxprune.workdir import chmod_as_created

_SINGLE = "model.safetensors"
_INDEX = "model.safetensors.index.json"


def _safetensors_numpy():
    try:
        from safetensors import numpy as st_numpy
    except ImportError as err:
        raise ImportError(
            "Hugging Face checkpoints need the 'safetensors' package: "
            "pip install 'jaxprune[models]'"
        ) from err
    return st_numpy


def read_hf_tensors(directory: str) -> SafetensorsTensors:
    """Every tensor of ``model.safetensors`` or of the shards its index lists, each read in its
    stored dtype (bfloat16 included) when looked up (``read_safetensors``)."""
    single = os.path.join(directory, _SINGLE)
    index = os.path.join(directory, _INDEX)
    if os.path.isfile(single):
        return read_safetensors(single)
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(directory, s))]
        if missing:  # before reading any: a partial copy or download
            raise FileNotFoundError(f"{directory}: {_INDEX} lists {len(shards)} shards, "
                                    f"{len(missing)} of them missing: {missing[:4]}")
        tensors = read_safetensors(os.path.join(directory, shards[0]))
        for shard in shards[1:]:
            tensors = tensors | read_safetensors(os.path.join(directory, shard))
        absent = sorted(name for name, shard in weight_map.items() if name not in tensors)
        if absent:
            raise ValueError(f"{directory}: {_INDEX} maps {len(absent)} tensors to shards "
                             f"that do not hold them: {absent[:4]}")
        return tensors
    raise FileNotFoundError(f"{directory} has neither {_SINGLE} nor {_INDEX}")


def load_hf_dir(directory: str, *, param_dtype=jnp.float32) -> tuple[Llama, Tokenizer | None]:
    """Loads a Hugging Face Llama or Qwen2 checkpoint directory.

    Args:
      directory: holds ``config.json``, the safetensors weights and, optionally,
        ``tokenizer.json``.
      param_dtype: dtype of the model's parameters.

    Returns:
      ``(model, tokenizer)``; the tokenizer is ``None`` when there is no ``tokenizer.json``.

    Raises:
      FileNotFoundError: for a missing directory, ``config.json`` or weights.
      ValueError: for an unsupported config or tensors that do not fit it.
    """
    config = _read_hf_config(directory)
    tensors = read_hf_tensors(directory)
    if config.tie_word_embeddings:  # some exports write the tied head twice
        tensors = tensors.without({"lm_head.weight"})
    model = model_from_hf_tensors(config, tensors, param_dtype=param_dtype)
    return model, _hf_tokenizer(directory, config)


def open_hf_dir(directory: str, *, param_dtype=jnp.float32) -> tuple[LazyModel,
                                                                    Tokenizer | None]:
    """A Hugging Face checkpoint directory opened lazily: ``config.json`` read, the
    safetensors files indexed (their headers read, no tensor), the tokenizer loaded.

    Args:
      directory: as ``load_hf_dir``'s.
      param_dtype: the dtype of every parameter the ``LazyModel`` materialises.

    Returns:
      ``(LazyModel, tokenizer)``, the tokenizer ``None`` without ``tokenizer.json``.

    Raises:
      FileNotFoundError, ValueError: as ``load_hf_dir`` (missing files or shards, tensors
        that do not match the config), before any tensor is read.
    """
    config = _read_hf_config(directory)
    tensors = read_hf_tensors(directory)
    if config.tie_word_embeddings:
        tensors = tensors.without({"lm_head.weight"})
    return LazyModel(config, tensors, param_dtype), _hf_tokenizer(directory, config)


def _read_hf_config(directory: str):
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Hugging Face checkpoint directory not found: {directory}")
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{directory} has no config.json")
    with open(config_path) as f:
        return config_from_hf_dict(json.load(f))


def _hf_tokenizer(directory: str, config) -> Tokenizer | None:
    tokenizer_path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(tokenizer_path):
        return None
    return Tokenizer.from_file(
        tokenizer_path, bos_id=config.bos_token_id, eos_id=config.eos_token_id,
        add_bos=_adds_bos(directory) and config.bos_token_id is not None,
    )


def _adds_bos(directory: str) -> bool:
    """``add_bos_token`` of the directory's ``tokenizer_config.json`` (False without one)."""
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        return bool(json.load(f).get("add_bos_token", False))


# What an export stores, by the parameters' dtype (``torch_dtype`` names).
EXPORT_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def export_dtype(model: Llama) -> str:
    """The ``torch_dtype`` an export of ``model`` stores: its parameters' dtype when they all
    share one of ``EXPORT_DTYPES``, else float32 (nothing is rounded that was not already)."""
    dtypes = {np.dtype(leaf.dtype) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
    for name, dtype in EXPORT_DTYPES.items():
        if dtypes == {np.dtype(dtype)}:
            return name
    return "float32"


def save_hf_dir(model: Llama, directory: str, *, tokenizer: Tokenizer | None = None) -> None:
    """Exports a model (pruned or not) as a Hugging Face ``LlamaForCausalLM`` directory.

    The files are written into a temporary directory beside ``directory`` and moved into place
    at the end, so an interrupted export leaves no half-written checkpoint.

    Args:
      model: the model; its blocks must all have the same widths. Its weights are stored in
        its own dtype (``export_dtype``: a bfloat16 model exports bfloat16).
      directory: destination; must not exist yet.
      tokenizer: written as ``tokenizer.json`` when given (with a ``tokenizer_config.json``
        saying ``add_bos_token`` when its model's sequences start with BOS).

    Raises:
      ValueError: if the blocks differ in width (a Hugging Face Llama config cannot say so).
      FileExistsError: if ``directory`` exists.
    """
    dtype_name = export_dtype(model)
    hf_config = model.config.to_hf_dict(torch_dtype=dtype_name)
    write_hf_directory(directory, hf_config,
                       lambda: hf_tensors_from_model(model, EXPORT_DTYPES[dtype_name]),
                       tokenizer=tokenizer)


def write_hf_directory(directory: str, hf_config: dict, make_tensors, *,
                       tokenizer: Tokenizer | None = None) -> None:
    """Writes ``config.json``, ``model.safetensors`` (``make_tensors()``: name -> array) and the
    tokenizer into a temporary directory beside ``directory``, then moves it into place.

    Raises:
      FileExistsError: if ``directory`` exists.
    """
    save_file = _safetensors_numpy().save_file
    if os.path.exists(directory):
        raise FileExistsError(f"export directory already exists: {directory}")
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        with open(os.path.join(staging, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2)
        save_file(make_tensors(), os.path.join(staging, _SINGLE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(os.path.join(staging, "tokenizer.json"))
            if tokenizer.add_bos:  # Gemma: say so, as its own tokenizer_config.json does
                with open(os.path.join(staging, "tokenizer_config.json"), "w") as f:
                    json.dump({"add_bos_token": True, "add_eos_token": False,
                               "bos_token": tokenizer.backend.id_to_token(tokenizer.bos_id)},
                              f, indent=2)
        # mkdtemp makes the directory private (0700); an export is for others to read.
        chmod_as_created(staging, directory=True)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
