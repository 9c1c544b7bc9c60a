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


def _sharded_hf_dir(directory) -> None:
    """A tiny model's Hugging Face directory, its tensors split over two shards and an index
    (the layout of a Hub checkpoint and of a streamed run's output)."""
    from flax import nnx
    from safetensors.numpy import load_file, save_file

    from jaxprune import models

    config = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                                num_kv_heads=2, intermediate_size=48, head_dim=8)
    models.save_hf_dir(models.Llama(config, rngs=nnx.Rngs(3)), str(directory))
    single = directory / "model.safetensors"
    tensors = load_file(single)
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, directory / file, metadata={"format": "pt"})
    single.unlink()
    weight_map = {n: file for file, part in halves.items() for n in part}
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_opening_a_sharded_checkpoint_and_asking_for_names_reads_no_tensor(tmp_path,
                                                                            monkeypatch):
    """``name in tensors`` must not read the tensor: Mapping's default ``__contains__`` looks
    it up, which read every tensor of a sharded checkpoint once on opening (the index check),
    the embedding table included (0.7 GB transient at 3B parameters)."""
    from jaxprune import models
    from jaxprune.models import safetensors_file

    _sharded_hf_dir(tmp_path / "hf")
    reads = []
    real_fromfile = np.fromfile

    def counting_fromfile(*args, **kwargs):
        reads.append(kwargs.get("count"))
        return real_fromfile(*args, **kwargs)

    monkeypatch.setattr(safetensors_file.np, "fromfile", counting_fromfile)
    source, _ = models.open_hf_dir(str(tmp_path / "hf"))
    assert "model.embed_tokens.weight" in source.tensors
    assert "model.layers.9.mlp.up_proj.weight" not in source.tensors
    assert reads == []
    block = source.block(1)  # the lookups themselves still read, one tensor each
    assert len(reads) == 9 and block.mlp.up_proj.kernel.shape == (32, 48)


@pytest.mark.real_model
def test_asking_a_gguf_for_a_name_neither_reads_nor_dequantizes_it(monkeypatch):
    from jaxprune import models
    from jaxprune.models import gguf_io

    source, _ = models.open_model("smollm2-135m")

    def refuse(*args, **kwargs):
        raise AssertionError("a membership test read a tensor")

    monkeypatch.setattr(gguf_io.np, "fromfile", refuse)
    assert "model.embed_tokens.weight" in source.tensors
    assert "lm_head.weight" not in source.tensors  # tied


def test_a_written_file_reads_back_in_the_safetensors_package_bfloat16_included(tmp_path):
    import functools

    import ml_dtypes
    from safetensors.torch import load_file

    from jaxprune.models.safetensors_file import write_safetensors

    rng = np.random.default_rng(4)
    arrays = {"w.bf16": (rng.standard_normal((3, 5)) * 7).astype(ml_dtypes.bfloat16),
              "a.f32": rng.standard_normal((2, 4, 3)).astype(np.float32),
              "mask": rng.random((4, 6)) > 0.5, "ids": rng.integers(-9, 9, 7),
              "scalar": np.asarray(2.5, np.float16)}
    sources = {name: (a.shape, a.dtype, functools.partial(a.copy)) for name, a in arrays.items()}
    path = tmp_path / "w.safetensors"
    with open(path, "wb") as f:
        write_safetensors(f, sources, {"format": "pt"})
    theirs = load_file(path)
    assert list(read_safetensors(str(path))) == list(arrays)  # in the order given
    for name, array in arrays.items():
        np.testing.assert_array_equal(theirs[name].float().numpy().astype(np.float64),
                                      array.astype(np.float64), name)
        np.testing.assert_array_equal(read_safetensors(str(path))[name], array, name)


def test_writing_a_tensor_of_another_shape_than_announced_is_refused(tmp_path):
    from jaxprune.models.safetensors_file import write_safetensors

    values = np.arange(6, dtype=np.float32)
    with open(tmp_path / "w.safetensors", "wb") as f, pytest.raises(
            ValueError, match=r"tensor 'w': made float32\[6\], announced float32\[2, 3\]"):
        write_safetensors(f, {"w": ((2, 3), np.dtype(np.float32), lambda: values)})
