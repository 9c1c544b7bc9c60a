"""Conversion between Hugging Face tensor names/layouts and the NNX model's parameters.

Hugging Face stores linear weights ``[out, in]`` under names like
``model.layers.3.self_attn.q_proj.weight``; the NNX model stores kernels ``[in, out]`` under
``layers/3/self_attn/q_proj/kernel``. Everything else keeps its layout.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune import paths
from jaxprune.models.config import LlamaConfig
from jaxprune.models.llama import Llama, abstract_split


def hf_name(path: str) -> tuple[str, bool]:
    """Hugging Face tensor name of a parameter path, and whether the layout is transposed."""
    parts = path.split("/")
    leaf = parts[-1]
    transposed = leaf == "kernel"
    if leaf in ("kernel", "embedding", "scale"):
        parts[-1] = "weight"
    name = ".".join(parts)
    return (name if name.startswith("lm_head") else "model." + name), transposed


def model_from_hf_tensors(
    config: LlamaConfig, tensors: Mapping[str, np.ndarray], *, param_dtype=jnp.float32
) -> Llama:
    """Builds a model from Hugging Face-named tensors without initialising random weights.

    Args:
      config: the model's config.
      tensors: name to array in Hugging Face layout; names not used by the model are refused.
      param_dtype: dtype of the model's parameters.

    Returns:
      The model.

    Raises:
      ValueError: naming missing or unexpected tensors, a tensor of the wrong shape, or the
        first tensor (in parameter order) holding NaN or inf.
    """
    graphdef, abstract_state = abstract_split(config, param_dtype=param_dtype)
    wanted = {}
    for path, leaf in paths.leaves_with_paths(abstract_state):
        name, transposed = hf_name(path)
        wanted[name] = (path, transposed, tuple(leaf.shape))
    check_tensor_names(set(wanted), tensors)

    state = paths.map_with_path_str(
        lambda path, leaf: param_from_hf_tensors(path, leaf, tensors, param_dtype),
        abstract_state)
    return nnx.merge(graphdef, state)


def check_tensor_names(wanted: set[str], tensors) -> None:
    """Refuses checkpoint tensors that do not match the config's names (ValueError naming the
    first missing and unexpected ones)."""
    missing = sorted(wanted - set(tensors))
    unexpected = sorted(set(tensors) - wanted)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint tensors do not match the config: missing {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
            f"{' ...' if len(unexpected) > 6 else ''}"
        )


def param_from_hf_tensors(path: str, leaf, tensors: Mapping[str, np.ndarray],
                          param_dtype) -> jax.Array:
    """The parameter at ``path`` (a model path, ``layers/3/mlp/up_proj/kernel``) from its
    Hugging Face tensor, in the NNX layout and ``param_dtype``.

    Raises:
      ValueError: for a shape other than ``leaf``'s, or NaN or infinite entries.
    """
    name, transposed = hf_name(path)
    array = np.asarray(tensors[name])
    if transposed:
        array = array.T
    if array.shape != tuple(leaf.shape):
        raise ValueError(
            f"tensor {name!r} has shape {np.asarray(tensors[name]).shape}; the config "
            f"needs {tuple(leaf.shape)}{' transposed' if transposed else ''}"
        )
    check_finite(name, array)
    return jnp.asarray(array, dtype=param_dtype)


def check_finite(name: str, array: np.ndarray) -> None:
    """Refuses a tensor with NaN or infinite entries (a corrupt file or a failed dequantization).

    Raises:
      ValueError: naming the tensor, how many entries are bad and the first one's index.
    """
    finite = np.isfinite(array)
    if not finite.all():
        first = np.unravel_index(int(np.argmin(finite)), array.shape)
        raise ValueError(
            f"tensor {name!r} has {int(array.size - finite.sum())} non-finite values (NaN or "
            f"inf) after loading, the first at index {tuple(int(i) for i in first)}; the "
            "checkpoint file is corrupt")


def hf_tensors_from_model(model: Llama, dtype=np.float32) -> dict[str, np.ndarray]:
    """Hugging Face-named tensors of a model in ``dtype`` (float32 for computing with them;
    an export keeps the model's own bfloat16 or float16), ready for safetensors."""
    return hf_tensors_of_state(nnx.state(model, nnx.Param), dtype)


def hf_tensors_of_state(state, dtype=np.float32, prefix: str = "") -> dict[str, np.ndarray]:
    """Hugging Face-named tensors of parameters ``state`` whose paths lack ``prefix`` (a
    block's state: ``"layers/3/"``), in ``dtype`` and the Hugging Face layout."""
    return {name: make() for name, (_, _, make) in hf_tensor_sources(state, dtype,
                                                                     prefix).items()}


def hf_tensor_sources(state, dtype=np.float32, prefix: str = "") -> dict[str, tuple]:
    """``hf_tensors_of_state`` made one tensor at a time: name -> ``(shape, dtype, make)``
    (``safetensors_file.write_safetensors``'s input), ``make()`` copying that parameter to host
    memory in ``dtype`` and the Hugging Face layout only when called."""
    sources = {}
    for path, leaf in paths.leaves_with_paths(state):
        name, transposed = hf_name(prefix + path)
        shape = tuple(reversed(leaf.shape)) if transposed else tuple(leaf.shape)
        sources[name] = (shape, np.dtype(dtype),
                         functools.partial(_host_tensor, leaf, dtype, transposed))
    return sources


def _host_tensor(leaf, dtype, transposed: bool) -> np.ndarray:
    array = np.asarray(leaf).astype(dtype, copy=False)
    return np.ascontiguousarray(array.T if transposed else array)
