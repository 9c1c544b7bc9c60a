"""Quantization in the one-shot engine: after pruning, keeping masks, from configs."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import qwix
from flax import nnx

from jaxprune import models, oneshot, paths, quant
from jaxprune.patterns import parse_pattern
from tests.oneshot_fields import oneshot_fields

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=64, head_dim=8)
SPEC = quant.QuantSpec(4, 16, False)


@pytest.fixture(scope="module")
def tiny():
    return models.Llama(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def segments():
    return np.random.default_rng(0).integers(0, CONFIG.vocab_size, (6, 16))


def kernels(model) -> dict:
    return {p: np.asarray(leaf) for p, leaf in paths.leaves_with_paths(nnx.state(model, nnx.Param))
            if p.endswith("kernel")}


def check_on_grid(result, pattern=None):
    """Every pruned kernel equals its QArray's values; pruned weights are exactly zero."""
    state = kernels(result.model)
    masks = dict(paths.leaves_with_paths(result.masks))
    assert len(result.quantized) == 14  # 7 linear layers x 2 blocks
    for path, quantized in result.quantized.items():
        kernel = state[path]
        np.testing.assert_array_equal(np.asarray(qwix.dequantize(quantized)), kernel)
        mask = np.asarray(masks[path])
        assert np.all(kernel[~mask] == 0), path
        if pattern is not None:
            assert np.all(mask.T.reshape(mask.shape[1], -1, pattern.m).sum(-1) == pattern.n)


@pytest.mark.parametrize("method, quantizer", [
    (oneshot.SparseGPT(blocksize=16), oneshot.GPTQ(SPEC, blocksize=16)),
    (oneshot.WANDA, oneshot.RoundToNearest(SPEC)),
    (oneshot.SparseGPT(blocksize=16, quant=SPEC), None),  # the joint sweep
])
def test_pruned_then_quantized_kernels_keep_their_2_of_4_masks(tiny, segments, method,
                                                               quantizer):
    pattern = parse_pattern("2:4")
    config = oneshot.OneShotConfig(method=method, sparsity=None, pattern="2:4", batch_size=3,
                                   quantization=quantizer)
    result = oneshot.prune_oneshot(tiny, segments, config, progress=False)
    check_on_grid(result, pattern)
    codes = np.asarray(next(iter(result.quantized.values())).qvalue.astype(jnp.int32))
    assert codes.min() >= -8 and codes.max() <= 7


def test_dense_round_to_nearest_needs_no_calibration_and_equals_the_layer_function(tiny,
                                                                                   segments):
    config = oneshot.OneShotConfig(method=oneshot.KEEP_NONZERO, sparsity=0.0,
                                   pattern="unstructured",
                                   quantization=oneshot.RoundToNearest(SPEC))
    result = oneshot.prune_oneshot(tiny, segments, config, progress=False)
    check_on_grid(result)
    dense = kernels(tiny)
    for path, kernel in kernels(result.model).items():
        if path in result.quantized:
            want = oneshot.rtn_quantize_kernel(jnp.asarray(dense[path]), SPEC).kernel
            np.testing.assert_array_equal(kernel, np.asarray(want))


def test_gptq_on_the_dense_model_beats_round_to_nearest_on_the_calibration_loss(tiny,
                                                                                segments):
    """Same grid, same model: GPTQ's compensation must leave a lower language-model loss on
    the calibration segments than rounding each weight alone."""
    losses = {}
    for name, quantizer in (("rtn", oneshot.RoundToNearest(quant.QuantSpec(4, 16, True))),
                            ("gptq", oneshot.GPTQ(quant.QuantSpec(4, 16, True), blocksize=16))):
        config = oneshot.OneShotConfig(method=oneshot.KEEP_NONZERO, sparsity=0.0,
                                       pattern="unstructured", quantization=quantizer)
        model = oneshot.prune_oneshot(tiny, segments, config, progress=False).model
        logits = model(jnp.asarray(segments))
        dense_logits = tiny(jnp.asarray(segments))
        losses[name] = float(jnp.mean((logits - dense_logits) ** 2))
    assert losses["gptq"] < losses["rtn"]


def test_settings_from_config_build_each_quantization():
    fields = oneshot_fields(method="sparsegpt", pattern="2:4", sparsity=0.5, quantize="joint",
                            quant_bits=8, quant_group_size=0, quant_symmetric=False)
    joint = oneshot.settings_from_config(fields)
    assert joint.method.quant == quant.QuantSpec(8, 0, False) and joint.quantization is None
    gptq = oneshot.settings_from_config(fields | {"quantize": "gptq", "method": "dense"})
    assert gptq.method is oneshot.KEEP_NONZERO
    assert gptq.quantization == oneshot.GPTQ(quant.QuantSpec(8, 0, False), 128, 0.01)


@pytest.mark.parametrize("config, message", [
    (dict(method=oneshot.SparseGPT(quant=SPEC), quantization=oneshot.GPTQ(SPEC)),
     "quantizes as it prunes; a second quantization would round twice"),
    (dict(method=oneshot.SparseGPT(quant=SPEC),
          reconstruction=oneshot.BlockReconstruction()),
     "a reconstruction would move the weights off the grid"),
    (dict(method=oneshot.WANDA, quantization="gptq"), "quantization must be None or a quantizer"),
    (dict(method=oneshot.WANDA, quantization=oneshot.GPTQ(quant.QuantSpec(4, 24))),
     "group_size 24 does not divide the 64 inputs of 'layers/0/mlp/down_proj/kernel'"),
])
def test_bad_quantization_settings_are_refused_before_work(tiny, segments, config, message):
    with pytest.raises((TypeError, ValueError), match=message):
        oneshot.plan_oneshot(tiny, segments, oneshot.OneShotConfig(pattern="2:4",
                                                                   sparsity=None, **config))


def test_fingerprint_of_a_config_with_switches_off_is_that_of_before_the_fields():
    from configs import wanda
    from experiments import common

    config = wanda.get_config()
    before = config.copy_and_resolve_references()
    for name in ("quantize", "quant_bits", "quant_group_size", "quant_symmetric", "save_gguf",
                 "save_compressed", "recover", "lora_rank", "lora_alpha", "lora_layers",
                 "lora_seed", "train", "quant_embedding_bits", "reconstruction", "recon_steps",
                 "recon_lr"):
        del before[name]
    # The smoke run's shrinking of the training text came with the recovery.
    before.runlocal_overrides = [pair for pair in config.runlocal_overrides
                                 if not pair[0].startswith("train.")]
    assert len(before.runlocal_overrides) < len(config.runlocal_overrides)
    assert common.config_fingerprint(config) == common.config_fingerprint(before)
    for switch, value in (("quantize", "rtn"), ("save_gguf", "F16"), ("recover", "lora"),
                          ("quant_embedding_bits", 8), ("reconstruction", "adam")):
        changed = config.copy_and_resolve_references()
        changed[switch] = value
        assert common.config_fingerprint(changed) != common.config_fingerprint(before)
    # A setting only a switched-off stage reads does not count; once the stage is on, it does.
    other_lr = config.copy_and_resolve_references()
    other_lr.recon_lr = 0.5
    assert common.config_fingerprint(other_lr) == common.config_fingerprint(config)
    config.reconstruction = other_lr.reconstruction = "adam"
    assert common.config_fingerprint(other_lr) != common.config_fingerprint(config)
    config.reconstruction = "none"
    from configs import structured

    cut = structured.get_config("depth4,distill")
    before_cut = cut.copy_and_resolve_references()
    del before_cut["quantize"], before_cut["quant_settings"]
    assert common.config_fingerprint(cut) == common.config_fingerprint(before_cut)
    # A sweep's base counts the same way (a sweep's work directory is claimed by it).
    sweep = {"base": config.to_dict(), "points": []}
    assert (json.dumps(common.without_switched_off(sweep)["base"], sort_keys=True)
            == json.dumps(before.to_dict(), sort_keys=True))
