"""The on-demand safetensors reader against the safetensors package's own (torch) reader."""

import json
import struct

import numpy as np
import pytest

from jaxprune.models.safetensors_file import read_safetensors
from tests import lazy

torch = lazy.LazyModule("torch")


def test_every_dtype_reads_as_the_safetensors_package_reads_it(tmp_path):
    from safetensors.torch import load_file, save_file

    generator = torch.Generator().manual_seed(0)
    values = torch.randn(3, 5, generator=generator) * 7
    tensors = {"bf16": values.to(torch.bfloat16), "f16": values.to(torch.float16),
               "f32": values, "f64": values.double().T.contiguous(),
               "i64": torch.arange(-6, 6).reshape(2, 6),
               "i8": torch.arange(-3, 3, dtype=torch.int8),
               "bool": values > 0, "scalar": torch.tensor(2.5)}
    path = tmp_path / "t.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    ours = read_safetensors(str(path))
    want = load_file(path)
    assert sorted(ours) == sorted(want)
    for name, tensor in want.items():
        got = ours[name]
        assert got.shape == tuple(tensor.shape) == ours.shape(name), name
        np.testing.assert_array_equal(got.astype(np.float64), tensor.double().numpy(), name)
    assert str(ours["bf16"].dtype) == "bfloat16"


def _file(tmp_path, header: bytes, data: bytes = b"") -> str:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return str(path)


@pytest.mark.parametrize("header, data, message", [
    (b"{not json", b"", "the header is not JSON"),
    (json.dumps({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}).encode(),
     b"\0\0", "has dtype 'F8_E4M3'"),
    (json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode(),
     b"\0" * 8, "runs past the 8 data bytes"),
    (json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode(),
     b"\0" * 8, "does not match its shape"),
])
def test_a_damaged_file_is_named(tmp_path, header, data, message):
    with pytest.raises(ValueError, match=message):
        read_safetensors(_file(tmp_path, header, data))


def test_a_header_length_past_the_end_is_refused(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 10 ** 9) + b"{}")
    with pytest.raises(ValueError, match="does not fit the file"):
        read_safetensors(str(path))
