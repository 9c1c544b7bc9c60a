"""compressed-tensors export: the checkpoint decompressed by the compressed-tensors library
(and loaded by transformers) gives back the quantized model's weights exactly."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import models, oneshot, quant
from jaxprune.models import compressed_export

CONFIG = models.LlamaConfig(vocab_size=96, hidden_size=64, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=128, head_dim=16,
                            tie_word_embeddings=True)
TOKENS = np.random.default_rng(1).integers(0, 96, (2, 12))


@pytest.fixture(scope="module")
def tiny():
    return models.Llama(CONFIG, rngs=nnx.Rngs(0))


def pruned_and_quantized(model, spec: quant.QuantSpec):
    segments = np.random.default_rng(0).integers(0, 96, (4, 16))
    config = oneshot.OneShotConfig(method=oneshot.SparseGPT(blocksize=32), pattern="2:4",
                                   sparsity=None,
                                   quantization=oneshot.GPTQ(spec, blocksize=32))
    return oneshot.prune_oneshot(model, segments, config, progress=False)


def decompressed_weights(directory: str) -> dict[str, np.ndarray]:
    """Every quantized layer's weight as the compressed-tensors library decompresses it."""
    import torch
    from compressed_tensors.compressors.pack_quantized.base import (
        PackedQuantizationCompressor,
    )
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from safetensors.torch import load_file

    with open(os.path.join(directory, "config.json")) as f:
        group = json.load(f)["quantization_config"]["config_groups"]["group_0"]
    scheme = QuantizationScheme(targets=group["targets"],
                                weights=QuantizationArgs(**group["weights"]))
    tensors = load_file(os.path.join(directory, "model.safetensors"))
    modules = {name.rsplit(".", 1)[0] for name in tensors if name.endswith(".weight_packed")}
    weights = {}
    for module in modules:
        state = {k.rsplit(".", 1)[1]: v for k, v in tensors.items()
                 if k.rsplit(".", 1)[0] == module}
        out = PackedQuantizationCompressor.decompress(state, scheme)
        weights[module] = out["weight"].to(torch.float32).numpy()
    return weights


@pytest.mark.parametrize("spec", [quant.QuantSpec(4, 32, True), quant.QuantSpec(4, 0, False),
                                  quant.QuantSpec(8, 32, False), quant.QuantSpec(8, 0, True)],
                         ids=lambda s: s.label)
def test_the_library_decompresses_the_quantized_weights_exactly(tiny, spec, tmp_path):
    result = pruned_and_quantized(tiny, spec)
    directory = str(tmp_path / "ct")
    compressed_export.save_compressed_tensors(result.model, directory, result.quantized,
                                              sparsity="2:4")
    weights = decompressed_weights(directory)
    assert len(weights) == 14
    for path in result.quantized:
        module = models.weights.hf_name(path)[0].removesuffix(".weight")
        kernel = np.asarray(dict(_kernels(result.model))[path])
        np.testing.assert_array_equal(weights[module], kernel.T)
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)["quantization_config"]
    assert config["sparsity_config"]["sparsity_structure"] == "2:4"
    # Exact zeros: the 2:4 half, and kept weights that round to zero at 4 bits.
    assert 0.5 <= config["sparsity_config"]["global_sparsity"] < 0.51


def _kernels(model):
    from jaxprune import paths

    return paths.leaves_with_paths(nnx.state(model, nnx.Param))


def test_transformers_loads_the_checkpoint_with_the_same_logits(tiny, tmp_path):
    """transformers with compressed-tensors decompresses on load. (compressed-tensors 0.20.1
    cannot load asymmetric pack-quantized checkpoints through transformers: it sizes the zero
    points unpacked before reading the packed ones; the library's own decompressor, above,
    reads them.)"""
    import torch
    import transformers

    result = pruned_and_quantized(tiny, quant.QuantSpec(4, 32, True))
    directory = str(tmp_path / "ct")
    compressed_export.save_compressed_tensors(result.model, directory, result.quantized)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    with torch.no_grad():
        theirs = model(torch.tensor(TOKENS)).logits.numpy()
    ours = np.asarray(result.model(jnp.asarray(TOKENS)))
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5 * np.abs(ours).max())


def test_packing_matches_the_library(tmp_path):
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    codes = np.random.default_rng(2).integers(-8, 8, (6, 40))
    for bits, axis in ((4, 1), (4, 0), (8, 1)):
        values = codes if bits == 4 else codes * 9
        want = pack_to_int32(torch.tensor(values, dtype=torch.int8), bits, packed_dim=axis)
        np.testing.assert_array_equal(compressed_export.pack_int32(values, bits, axis),
                                      want.numpy())


def test_refused_before_writing(tiny, tmp_path):
    cut = models.Llama(CONFIG.replace(intermediate_size=(128, 96)), rngs=nnx.Rngs(0))
    quantized = {"layers/0/mlp/up_proj/kernel": oneshot.rtn_quantize_kernel(
        cut.layers[0].mlp.up_proj.kernel[...], quant.QuantSpec(4, 32)).quantized}
    with pytest.raises(ValueError, match="cannot hold this model: .*intermediate_size"):
        compressed_export.save_compressed_tensors(cut, str(tmp_path / "cut"), quantized)
    with pytest.raises(ValueError, match="needs quantized kernels"):
        compressed_export.save_compressed_tensors(tiny, str(tmp_path / "none"), {})
    mixed = {
        "layers/0/mlp/up_proj/kernel": oneshot.rtn_quantize_kernel(
            tiny.layers[0].mlp.up_proj.kernel[...], quant.QuantSpec(4, 32)).quantized,
        "layers/0/mlp/down_proj/kernel": oneshot.rtn_quantize_kernel(
            tiny.layers[0].mlp.down_proj.kernel[...], quant.QuantSpec(8, 32)).quantized}
    with pytest.raises(ValueError, match="holds one quantization grid"):
        compressed_export.save_compressed_tensors(tiny, str(tmp_path / "mixed"), mixed)
    assert list(tmp_path.iterdir()) == []
