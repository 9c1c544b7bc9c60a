"""A model opened without loading it: its config and tensors read on demand, made into device
arrays one block at a time.

For models larger than host or device memory: the streamed one-shot engine
(``jaxprune.oneshot.streaming``) asks for the embedding, final norm and head once (``shell``)
and for each block in turn (``block``), and writes each pruned block out before it asks for
the next (``block_hf_tensor_sources``, a tensor at a time; the shell's:
``weights.hf_tensor_sources``). Nothing but the piece asked for is read from disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune import paths
from jaxprune.models.config import LlamaConfig
from jaxprune.models.llama import Block, Llama, abstract_split
from jaxprune.models.weights import (
    check_tensor_names,
    hf_name,
    hf_tensor_sources,
    param_from_hf_tensors,
)


@dataclasses.dataclass(frozen=True)
class LazyModel:
    """A decoder whose weights stay on disk until a piece of it is asked for.

    Attributes:
      config: the model's shape.
      tensors: Hugging Face name -> array in Hugging Face layout, read from disk when looked up
        (``SafetensorsTensors``), so only what is asked for is read.
      param_dtype: the dtype every materialised parameter takes.
    """

    config: LlamaConfig
    tensors: Mapping[str, np.ndarray]
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_tensor_names(_wanted_names(self.config, self.param_dtype), self.tensors)

    def shell(self) -> Llama:
        """The model without its blocks: embedding, final norm and head as device arrays
        (``embed``, ``rope`` and ``head`` work; ``layers`` is empty)."""
        graphdef, state = _shell_split(self.config, self.param_dtype)
        filled = paths.map_with_path_str(
            lambda path, leaf: param_from_hf_tensors(path, leaf, self.tensors,
                                                     self.param_dtype), state)
        return nnx.merge(graphdef, filled)

    def block(self, index: int) -> Block:
        """Block ``index`` as device arrays, read from disk now."""
        if not 0 <= index < self.config.num_layers:
            raise IndexError(f"block {index} of a {self.config.num_layers}-block model")
        return _block_from(self.config, self.param_dtype, index, self.tensors)

    def abstract(self) -> Llama:
        """The whole model's structure with shape leaves (``abstract_llama``): for plans."""
        return _abstract_model(self.config, self.param_dtype)

    def nbytes(self) -> int:
        """Bytes of every parameter in ``param_dtype`` (what loading it whole would take)."""
        return self.config.num_params() * jnp.dtype(self.param_dtype).itemsize


def block_hf_tensor_sources(block: Block, index: int, dtype=np.float32) -> dict[str, tuple]:
    """Block ``index``'s parameters under their Hugging Face names and layout, in ``dtype``, as
    ``weights.hf_tensor_sources`` gives them: each copied to host memory only when written."""
    return hf_tensor_sources(nnx.state(block, nnx.Param), dtype, prefix=f"layers/{index}/")


def load_block_file(source: LazyModel, index: int, path: str) -> Block:
    """Block ``index`` of ``source``'s shape from a safetensors file holding its tensors (a
    streamed run's shard), in ``source.param_dtype``."""
    from jaxprune.models.safetensors_file import read_safetensors

    return _block_from(source.config, source.param_dtype, index, read_safetensors(path))


def _block_from(config: LlamaConfig, param_dtype, index: int,
                tensors: Mapping[str, np.ndarray]) -> Block:
    graphdef, state = nnx.split(_abstract_model(config, param_dtype).layers[index])
    filled = paths.map_with_path_str(
        lambda path, leaf: param_from_hf_tensors(f"layers/{index}/{path}", leaf, tensors,
                                                 param_dtype), state)
    return nnx.merge(graphdef, filled)


def _abstract_model(config: LlamaConfig, param_dtype) -> Llama:
    return nnx.merge(*abstract_split(config, param_dtype=param_dtype))


def _shell_split(config: LlamaConfig, param_dtype) -> tuple:
    model = _abstract_model(config, param_dtype)
    model.layers = nnx.List([])
    return nnx.split(model)


def _wanted_names(config: LlamaConfig, param_dtype) -> set[str]:
    _, state = abstract_split(config, param_dtype=param_dtype)
    return {hf_name(path)[0] for path, _ in paths.leaves_with_paths(state)}
