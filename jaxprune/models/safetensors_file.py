"""A safetensors file's tensors, memory-mapped, bfloat16 included.

``safetensors.numpy`` refuses bfloat16 (NumPy has no such dtype), which is how most Hugging
Face checkpoints of the Llama, Mistral, Qwen and Gemma families are stored. The format is an
8-byte little-endian header length, a JSON header (name -> dtype, shape, byte offsets) and the
raw little-endian data; this reads the header and maps each tensor as a NumPy view of the file
(``ml_dtypes.bfloat16`` for ``BF16``), so nothing is read until a tensor is used and a model
need not fit in host memory to be opened.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
# A header is a few hundred bytes per tensor; anything this large is a corrupt length.
_MAX_HEADER = 100 * 2 ** 20


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as read-only memory-mapped arrays in file order.

    Args:
      path: a ``.safetensors`` file.

    Returns:
      name -> array of the stored dtype and shape (a view of the file: reading it reads the
      file; the file stays mapped while any array is alive).

    Raises:
      ValueError: for a file that is not safetensors (bad header length or JSON), a dtype
        this reader does not know, or tensors that run past the end of the file.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: {size} bytes, too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if not 0 < length <= min(_MAX_HEADER, size - 8):
            raise ValueError(f"{path}: header length {length} does not fit the file "
                             f"({size} bytes); not a safetensors file?")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: the header is not JSON ({err})") from None
    header.pop("__metadata__", None)
    data_start = 8 + length
    if not header:
        return {}
    mapped = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start,
                       shape=(size - data_start,))
    tensors = {}
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        tensors[name] = _tensor_view(path, mapped, name, entry)
    return tensors


def _tensor_view(path: str, mapped: np.ndarray, name: str, entry: dict) -> np.ndarray:
    """One header entry as a view of the mapped data, its bounds and dtype checked."""
    if entry["dtype"] not in DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has dtype {entry['dtype']!r}; this reader "
                         f"knows {sorted(DTYPES)}")
    dtype = np.dtype(DTYPES[entry["dtype"]])
    begin, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    if end > mapped.size or end - begin != dtype.itemsize * int(np.prod(shape)):
        raise ValueError(f"{path}: tensor {name!r} ({entry['dtype']} {list(shape)}) has byte "
                         f"range [{begin}, {end}), which does not match its shape or runs past "
                         f"the {mapped.size} data bytes")
    return mapped[begin:end].view(dtype).reshape(shape)
