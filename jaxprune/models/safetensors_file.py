"""A safetensors file's tensors, read on demand, bfloat16 included.

``safetensors.numpy`` refuses bfloat16 (NumPy has no such dtype), which is how most Hugging
Face checkpoints of the Llama, Mistral, Qwen and Gemma families are stored. The format is an
8-byte little-endian header length, a JSON header (name -> dtype, shape, byte offsets) and the
raw little-endian data. ``read_safetensors`` reads the header only and returns a mapping whose
values are read from the file when asked for (``ml_dtypes.bfloat16`` for ``BF16``): a model
need not fit in host memory to be opened, and what was read is freed with the array (file
pages are not kept mapped in the process, as a memory map would keep them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
# A header is a few hundred bytes per tensor; anything this large is a corrupt length.
_MAX_HEADER = 100 * 2 ** 20


@dataclasses.dataclass(frozen=True)
class _Entry:
    path: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # from the start of the file, in bytes


class SafetensorsTensors(Mapping):
    """Tensor name -> array, each read from its file when looked up (a new array each time).

    ``shape(name)`` and ``dtype(name)`` come from the headers, without reading; ``|`` joins the
    tensors of several files (a sharded checkpoint); ``without(names)`` leaves some out.
    """

    def __init__(self, entries: dict[str, _Entry]):
        self._entries = entries

    def __getitem__(self, name: str) -> np.ndarray:
        e = self._entries[name]
        count = int(np.prod(e.shape))
        return np.fromfile(e.path, dtype=e.dtype, count=count, offset=e.offset).reshape(e.shape)

    def __contains__(self, name: object) -> bool:
        # Mapping's default looks the name up, which would read the whole tensor from disk.
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def dtype(self, name: str) -> np.dtype:
        return self._entries[name].dtype

    def __or__(self, other: SafetensorsTensors) -> SafetensorsTensors:
        return SafetensorsTensors({**self._entries, **other._entries})

    def without(self, names) -> SafetensorsTensors:
        return SafetensorsTensors({k: v for k, v in self._entries.items() if k not in names})


def read_safetensors(path: str) -> SafetensorsTensors:
    """Every tensor of a safetensors file, in file order, each read when looked up.

    Args:
      path: a ``.safetensors`` file.

    Returns:
      A ``SafetensorsTensors`` mapping (only the header is read here).

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
    data_start, data_bytes = 8 + length, size - 8 - length
    ordered = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    return SafetensorsTensors({name: _entry(path, name, e, data_start, data_bytes)
                               for name, e in ordered})


def _entry(path: str, name: str, entry: dict, data_start: int, data_bytes: int) -> _Entry:
    """One header entry, its bounds and dtype checked."""
    if entry["dtype"] not in DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has dtype {entry['dtype']!r}; this reader "
                         f"knows {sorted(DTYPES)}")
    dtype = np.dtype(DTYPES[entry["dtype"]])
    begin, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    if end > data_bytes or end - begin != dtype.itemsize * int(np.prod(shape)):
        raise ValueError(f"{path}: tensor {name!r} ({entry['dtype']} {list(shape)}) has byte "
                         f"range [{begin}, {end}), which does not match its shape or runs past "
                         f"the {data_bytes} data bytes")
    return _Entry(path, dtype, shape, data_start + begin)


# A tensor to write: its shape, its dtype and a function that makes its array when its turn
# comes (so a file is written one tensor in memory at a time).
TensorSource = tuple[tuple[int, ...], np.dtype, Callable[[], np.ndarray]]


def write_safetensors(f: BinaryIO, tensors: Mapping[str, TensorSource],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Writes a safetensors file to the open binary file ``f``, each tensor made and written in
    turn, never the whole file in memory (``safetensors.numpy.save`` builds it as one bytes
    object: at a streamed run's end, the embedding table twice).

    Args:
      f: an open binary file.
      tensors: name -> ``(shape, dtype, make)``; written in this order.
      metadata: the header's ``__metadata__`` strings.

    Raises:
      ValueError: for a dtype safetensors has no name for, or a made array whose shape or
        dtype differs from the one announced.
    """
    names = {np.dtype(dtype): name for name, dtype in DTYPES.items()}
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, (shape, dtype, _) in tensors.items():
        if np.dtype(dtype) not in names:
            raise ValueError(f"tensor {name!r}: dtype {np.dtype(dtype)} has no safetensors name")
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": names[np.dtype(dtype)], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors does
    f.write(struct.pack("<Q", len(encoded)) + encoded)
    for name, (shape, dtype, make) in tensors.items():
        array = np.asarray(make())
        if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
            raise ValueError(f"tensor {name!r}: made {array.dtype}{list(array.shape)}, "
                             f"announced {np.dtype(dtype)}{list(shape)}")
        f.write(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
