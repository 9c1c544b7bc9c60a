"""Writing ``compressed-tensors`` checkpoints, the format vLLM loads quantized (and 2:4 sparse)
models from: a Hugging Face directory whose ``config.json`` has a ``quantization_config``
(``quant_method`` ``compressed-tensors``, format ``pack-quantized``) and whose quantized
linear layers are stored as ``weight_packed`` (int4 or int8 codes packed into int32 along the
input axis, element ``i`` of a word at bit ``bits * i``, codes offset to unsigned),
``weight_scale`` (``[out, groups]``), ``weight_shape`` and, when asymmetric,
``weight_zero_point`` (packed the same way along the output axis).

The codes, scales and zero points are the ``qwix.QArray``s of the quantization as they are
(jaxprune's grid is the format's: signed codes, ``w = scale * (q - zero)``), so nothing is
rounded twice; scales are stored in float32, so the decompressed weights equal the model's
exactly. A 2:4-sparse model says so in a ``sparsity_config`` (format ``dense``: the zeros are
stored, and ``sparsity_structure`` "2:4" tells the runtime it may use its 2:4 kernels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flax import nnx

from jaxprune import paths
from jaxprune.models.hf_io import write_hf_directory
from jaxprune.models.llama import Llama
from jaxprune.models.tokenizer import Tokenizer
from jaxprune.models.weights import hf_name, hf_tensors_from_model
from jaxprune.quant.size import qarray_bits

FORMAT = "pack-quantized"
SPARSITY_STRUCTURES = ("2:4", "unstructured")


def pack_int32(codes: np.ndarray, bits: int, axis: int = 1) -> np.ndarray:
    """Packs signed ``bits``-bit codes of a 2-D array into int32 words along ``axis``:
    offset to unsigned, ``32 // bits`` per word, the first in the lowest bits.

    Raises:
      ValueError: for a width that does not divide 32.
    """
    if 32 % bits:
        raise ValueError(f"packing takes widths dividing 32, got {bits}")
    values = np.asarray(codes, np.int64) + (1 << (bits - 1))
    if axis == 0:
        values = values.T
    per_word = 32 // bits
    rows, cols = values.shape
    padded = np.zeros((rows, math.ceil(cols / per_word) * per_word), np.uint64)
    padded[:, :cols] = values
    shifts = (np.arange(per_word, dtype=np.uint64) * np.uint64(bits))[None, None, :]
    words = (padded.reshape(rows, -1, per_word) << shifts).sum(axis=-1)
    packed = words.astype(np.uint32).view(np.int32)
    return np.ascontiguousarray(packed.T if axis == 0 else packed)


def common_grid(quantized: Mapping) -> tuple[int, int, bool]:
    """``(bits, group size or 0 for one scale per output unit, symmetric)`` shared by every
    ``qwix.QArray`` (a kernel with one group of all its inputs fits any group size equal to
    its input size).

    Raises:
      ValueError: when the kernels were quantized on different grids.
    """
    kinds = {(qarray_bits(q), q.zero_point is None) for q in quantized.values()}
    shapes = {(int(q.qvalue.shape[0]), int(q.scale.shape[0])) for q in quantized.values()}
    groups = {inputs // count for inputs, count in shapes if count > 1}
    single = {inputs for inputs, count in shapes if count == 1}
    if len(kinds) != 1 or len(groups) > 1 or (groups and not single <= groups):
        raise ValueError(f"a compressed-tensors export holds one quantization grid; the "
                         f"kernels have (bits, symmetric) {sorted(kinds)} and (inputs, scale "
                         f"groups) {sorted(shapes)}")
    bits, symmetric = kinds.pop()
    return bits, groups.pop() if groups else 0, symmetric


def _weights_args(bits: int, group: int, symmetric: bool) -> dict:
    """The ``weights`` quantization arguments of the config group."""
    args = {"num_bits": bits, "type": "int", "symmetric": symmetric, "dynamic": False,
            "strategy": "group" if group else "channel"}
    if group:
        args["group_size"] = group
    return args


def _quantized_tensors(quantized: Mapping, bits: int) -> dict[str, np.ndarray]:
    """The packed tensors of every quantized kernel, by Hugging Face name."""
    tensors = {}
    for path, array in quantized.items():
        name, _ = hf_name(path)
        module = name.removesuffix(".weight")
        codes = np.asarray(array.qvalue.astype(np.int8)).T  # [out, in]
        tensors[f"{module}.weight_packed"] = pack_int32(codes, bits)
        tensors[f"{module}.weight_scale"] = np.ascontiguousarray(
            np.asarray(array.scale, np.float32).T)
        tensors[f"{module}.weight_shape"] = np.asarray(codes.shape, np.int64)
        if array.zero_point is not None:
            zeros = np.asarray(array.zero_point.astype(np.int8)).T  # [out, groups]
            tensors[f"{module}.weight_zero_point"] = pack_int32(zeros, bits, axis=0)
    return tensors


def compression_config(model: Llama, quantized: Mapping, sparsity: str | None,
                       global_sparsity: float) -> dict:
    """The ``quantization_config`` of ``config.json``.

    Raises:
      ValueError: for kernels quantized on different grids, or an unknown sparsity structure.
    """
    bits, group, symmetric = common_grid(quantized)
    modules = [hf_name(p)[0].removesuffix(".weight") for p in quantized]
    linears = {hf_name(t.path)[0].removesuffix(".weight") for t in model.prunable_linears()}
    ignore = ["lm_head", *sorted(linears - set(modules))]
    config = {
        "quant_method": "compressed-tensors", "format": FORMAT,
        "quantization_status": "compressed", "ignore": ignore,
        "config_groups": {"group_0": {
            "targets": ["Linear"], "format": FORMAT, "input_activations": None,
            "output_activations": None,
            "weights": _weights_args(bits, group, symmetric)}},
    }
    if sparsity is not None:
        if sparsity not in SPARSITY_STRUCTURES:
            raise ValueError(f"sparsity must be one of {SPARSITY_STRUCTURES} or None, got "
                             f"{sparsity!r}")
        config["sparsity_config"] = {
            "format": "dense", "sparsity_structure": sparsity, "targets": ["Linear"],
            "ignore": ignore, "global_sparsity": global_sparsity}
    return config


def save_compressed_tensors(model: Llama, directory: str, quantized: Mapping, *,
                            sparsity: str | None = None,
                            tokenizer: Tokenizer | None = None) -> None:
    """Writes a ``compressed-tensors`` checkpoint of a quantized (and possibly sparse) model,
    atomically (a temporary directory beside ``directory``, renamed at the end).

    Args:
      model: the model whose kernels ``quantized`` describes (its other parameters are stored
        in float32: norms, embeddings, unquantized layers).
      directory: destination; must not exist yet.
      quantized: ``qwix.QArray`` by kernel path (``OneShotResult.quantized``), one grid for
        all.
      sparsity: ``"2:4"`` or ``"unstructured"`` to state the zeros' structure, or ``None``.
      tokenizer: written as ``tokenizer.json`` when given.

    Raises:
      ValueError: for a model with per-block widths (a Hugging Face config cannot say so), no
        quantized kernel, kernels on different grids (before anything is written).
      FileExistsError: if ``directory`` exists.
    """
    if not quantized:
        raise ValueError("a compressed-tensors export needs quantized kernels "
                         "(OneShotResult.quantized); save_hf_dir writes a float model")
    try:
        hf_config = model.config.to_hf_dict(torch_dtype="float32")
    except ValueError as err:
        raise ValueError(f"compressed-tensors checkpoints are Hugging Face directories, "
                         f"which cannot hold this model: {err}") from None
    state = dict(paths.leaves_with_paths(nnx.state(model, nnx.Param)))
    kernels = [np.asarray(state[path]) for path in quantized]
    zeros = sum(int((k == 0).sum()) for k in kernels)
    hf_config["quantization_config"] = compression_config(
        model, quantized, sparsity, zeros / max(1, sum(k.size for k in kernels)))
    bits = common_grid(quantized)[0]

    def make_tensors():
        tensors = hf_tensors_from_model(model, np.float32)
        for path in quantized:
            del tensors[hf_name(path)[0]]
        tensors.update(_quantized_tensors(quantized, bits))
        return tensors

    write_hf_directory(directory, hf_config, make_tensors, tokenizer=tokenizer)
