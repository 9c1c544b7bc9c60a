"""A GGUF file's metadata and tensor index, read straight from its header.

``gguf.GGUFReader`` builds a NumPy view for every element of every metadata array, which for a
49,152-token vocabulary and its merges costs about 2.4 s of SmolLM2's 5.3 s load; the header is
a simple little-endian layout (llama.cpp's docs/gguf.md), so this reads it with ``struct`` in a
tenth of that. Tensors come back as the same memory-mapped arrays ``GGUFReader`` gives
(``tests/test_smollm2.py`` checks every field and tensor against it), and dequantization stays
with the ``gguf`` package.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import Any, BinaryIO

import numpy as np

_MAGIC = b"GGUF"
_STRING, _ARRAY = 8, 9
# GGUF metadata value types (scalars): struct format of each.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_DEFAULT_ALIGNMENT = 32


def import_gguf():
    """The ``gguf`` package, or an ImportError naming the extra that installs it."""
    try:
        import gguf
    except ImportError as err:
        raise ImportError(
            "reading GGUF files needs the 'gguf' package: pip install 'jaxprune[models]'"
        ) from err
    return gguf


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file.

    Attributes:
      name: its GGUF name (``blk.0.attn_q.weight``).
      ggml_type: its ``gguf.GGMLQuantizationType``.
      offset: where its data starts in the file, in bytes.
      data: memory-mapped, as ``gguf.GGUFReader`` shapes it: the values for float and integer
        types, the raw bytes of each row (``[..., bytes per row]``) for quantized ones; what
        ``gguf.quants.dequantize(data, ggml_type)`` takes.
    """

    name: str
    ggml_type: Any
    offset: int
    data: np.ndarray


@dataclasses.dataclass(frozen=True)
class GGUFFile:
    """Metadata (key -> Python value; arrays as lists) and tensors in file order."""

    metadata: dict[str, Any]
    tensors: list[GGUFTensor]


class _Header:
    """Little-endian reads from a buffered file."""

    def __init__(self, stream: BinaryIO, file_size: int):
        self.stream = stream
        self.file_size = file_size

    def read(self, size: int) -> bytes:
        # A corrupt length must not become a huge allocation: check it against the file first.
        if size > self.file_size - self.stream.tell():
            raise ValueError("the file ends inside its header")
        return self.stream.read(size)

    def scalar(self, fmt: str):
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.read(self.scalar("Q")).decode("utf-8")

    def value(self, kind: int):
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.scalar("I"), self.scalar("Q")
            if item_kind in (_STRING, _ARRAY):
                return [self.value(item_kind) for _ in range(count)]
            if item_kind not in _SCALARS:
                raise ValueError(f"unknown GGUF metadata array type {item_kind}")
            fmt = _SCALARS[item_kind]
            return np.frombuffer(self.read(count * struct.calcsize(fmt)),
                                 np.dtype("<" + fmt)).tolist()
        if kind not in _SCALARS:
            raise ValueError(f"unknown GGUF metadata value type {kind}")
        return self.scalar(_SCALARS[kind])


def _tensor_layout(gguf, ggml_type, dims: tuple[int, ...]) -> tuple[np.dtype, tuple, int]:
    """``(dtype, shape, item count)`` of a tensor's data, as ``gguf.GGUFReader`` lays it out."""
    qtype = gguf.GGMLQuantizationType
    native = {qtype.F16: np.float16, qtype.F32: np.float32, qtype.F64: np.float64,
              qtype.I8: np.int8, qtype.I16: np.int16, qtype.I32: np.int32, qtype.I64: np.int64}
    shape = tuple(reversed(dims))  # GGUF lists the fastest-varying axis first
    count = int(np.prod(dims))
    if ggml_type in native:
        return np.dtype(native[ggml_type]), shape, count
    block_size, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
    if shape[-1] % block_size:
        raise ValueError(f"a row of {shape[-1]} values is not whole blocks of {block_size} "
                         f"for {ggml_type.name}")
    return (np.dtype(np.uint8), (*shape[:-1], shape[-1] // block_size * type_size),
            count * type_size // block_size)


# Values per dequantization call: gguf's NumPy kernels make several temporaries the size of
# their input, and on a whole embedding (Gemma 3's 168M values) those stop fitting in cache and
# page-fault in fresh: 7.9 s for the one tensor, 0.8 s in slices of about a million values.
_DEQUANTIZE_CHUNK = 1 << 20


def dequantize(tensor: GGUFTensor) -> np.ndarray:
    """A tensor's values as float32, dequantized by ``gguf.quants.dequantize`` a slice of rows
    at a time.

    Args:
      tensor: a tensor of ``read_gguf_file``.

    Returns:
      The values, shaped ``[..., row]`` as GGUF orders them (``[out, in]`` for a weight).
    """
    gguf = import_gguf()
    data = tensor.data
    if data.ndim < 2:
        return gguf.quants.dequantize(data, tensor.ggml_type).astype(np.float32)
    flat = data.reshape(-1, data.shape[-1])
    first = gguf.quants.dequantize(flat[:1], tensor.ggml_type)
    out = np.empty((flat.shape[0], first.shape[-1]), np.float32)
    rows = max(1, _DEQUANTIZE_CHUNK // first.shape[-1])
    for start in range(0, flat.shape[0], rows):
        out[start:start + rows] = gguf.quants.dequantize(flat[start:start + rows],
                                                         tensor.ggml_type)
    return out.reshape(*data.shape[:-1], first.shape[-1])


def read_gguf_file(path: str) -> GGUFFile:
    """Reads a GGUF file's metadata and maps its tensors.

    Args:
      path: the ``.gguf`` file.

    Returns:
      A ``GGUFFile``.

    Raises:
      ImportError: without the ``gguf`` package (its quantization types and block sizes).
      ValueError: for a file that is not GGUF version 2 or 3 little-endian, a truncated header,
        or a tensor whose data would lie past the end of the file.
    """
    gguf = import_gguf()
    with open(path, "rb") as stream:
        header = _Header(stream, os.fstat(stream.fileno()).st_size)
        if header.read(4) != _MAGIC:
            raise ValueError("no GGUF magic number at its start")
        version = header.scalar("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (as read little-endian); versions 2 and "
                             f"3 are supported")
        tensor_count, kv_count = header.scalar("Q"), header.scalar("Q")
        metadata = {}
        for _ in range(kv_count):
            key = header.string()
            metadata[key] = header.value(header.scalar("I"))
        infos = []
        for _ in range(tensor_count):
            name = header.string()
            dims = tuple(header.scalar("Q") for _ in range(header.scalar("I")))
            infos.append((name, gguf.GGMLQuantizationType(header.scalar("I")), dims,
                          header.scalar("Q")))
        alignment = int(metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
        data_start = -(-stream.tell() // alignment) * alignment
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = []
    for name, ggml_type, dims, offset in infos:
        dtype, shape, count = _tensor_layout(gguf, ggml_type, dims)
        start = data_start + offset
        end = start + count * dtype.itemsize
        if end > mapped.size:
            raise ValueError(f"tensor {name!r} lies past the end of the file")
        tensors.append(GGUFTensor(name, ggml_type, start,
                                  mapped[start:end].view(dtype).reshape(shape)))
    return GGUFFile(metadata, tensors)
