"""GGUF export: round trips through jaxprune's loader and transformers' GGUF loader (an
independent reader), per tensor type, for dense, masked, cut and other-family models."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import models
from jaxprune.models import gguf_export, gguf_io
from jaxprune.models.rope import RopeScaling

TINY = models.LlamaConfig(vocab_size=96, hidden_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, intermediate_size=96, head_dim=16,
                          tie_word_embeddings=True, max_position_embeddings=256)
TOKENS = np.random.default_rng(0).integers(0, 96, (2, 12))
# The largest logit difference from the model before export, as a fraction of its largest
# logit, that each type's rounding may cause on this random model (measured: F16 1e-3,
# Q8_0 3e-2, Q4_0 0.4 of the scale).
TOLERANCE = {"F32": 0.0, "F16": 0.01, "Q8_0": 0.1, "Q4_0": 0.8}


def logits(model) -> np.ndarray:
    return np.asarray(model(jnp.asarray(TOKENS)))


def transformers_logits(path: str) -> np.ndarray:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.numpy()


@pytest.fixture(scope="module")
def tiny():
    return models.Llama(TINY, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("tensor_type", gguf_export.TENSOR_TYPES)
def test_round_trip_through_both_readers(tiny, tensor_type, tmp_path):
    path = str(tmp_path / "model.gguf")
    counts = gguf_export.save_gguf(tiny, path, tensor_type=tensor_type)
    assert counts.get(tensor_type if tensor_type != "F32" else "F32") >= 7 * 2
    reloaded, _ = gguf_io.load_gguf(path)
    # GGUF stores the norm's epsilon as float32, the precision the model computes it in.
    assert np.float32(reloaded.config.rms_norm_eps) == np.float32(TINY.rms_norm_eps)
    assert dataclasses.replace(reloaded.config, rms_norm_eps=TINY.rms_norm_eps) == TINY
    ours = logits(reloaded)
    scale = np.abs(logits(tiny)).max()
    assert np.abs(ours - logits(tiny)).max() <= TOLERANCE[tensor_type] * scale
    # transformers dequantizes and un-permutes the same file on its own.
    np.testing.assert_allclose(transformers_logits(path), ours, rtol=0, atol=1e-4 * scale)


def test_a_pruned_model_keeps_its_2_of_4_zeros_in_q4_0(tiny, tmp_path):
    state = nnx.state(tiny, nnx.Param)
    pruned = jax.tree.map(lambda w: w, state)
    masks = {}

    def prune(path, leaf):
        if leaf.ndim != 2 or "embed" in path:
            return leaf
        groups = np.abs(np.asarray(leaf)).T.reshape(leaf.shape[1], -1, 4)
        keep = np.argsort(np.argsort(groups, axis=-1), axis=-1) >= 2
        masks[path] = keep.reshape(leaf.shape[1], -1).T
        return jnp.where(masks[path], leaf, 0.0)

    from jaxprune import paths
    pruned = paths.map_with_path_str(prune, state)
    model = nnx.merge(nnx.graphdef(tiny), pruned)
    path = str(tmp_path / "pruned.gguf")
    gguf_export.save_gguf(model, path, tensor_type="Q4_0")
    reloaded = dict(paths.leaves_with_paths(nnx.state(gguf_io.load_gguf(path)[0], nnx.Param)))
    assert masks
    for name, keep in masks.items():
        kernel = np.asarray(reloaded[name])
        assert np.all(kernel[~keep] == 0), name
        assert np.all((kernel != 0).T.reshape(kernel.shape[1], -1, 4).sum(-1) <= 2), name


def test_per_block_widths_round_trip_as_arrays(tmp_path):
    config = dataclasses.replace(TINY, intermediate_size=(96, 64), num_heads=(4, 2),
                                 num_kv_heads=(2, 1))
    model = models.Llama(config, rngs=nnx.Rngs(1))
    path = str(tmp_path / "cut.gguf")
    gguf_export.save_gguf(model, path, tensor_type="F32")
    reloaded, _ = gguf_io.load_gguf(path)
    assert reloaded.config.intermediate_size == (96, 64)
    assert reloaded.config.num_heads == (4, 2) and reloaded.config.num_kv_heads == (2, 1)
    np.testing.assert_array_equal(logits(reloaded), logits(model))


# transformers' GGUF reader takes Qwen3's head_dim from its default (128), not from
# qwen3.attention.key_length, which jaxprune writes and reads; the tiny Qwen3 has 128.
@pytest.mark.parametrize("family", [dict(attention_bias=True), dict(qk_norm=True, head_dim=128)],
                         ids=["qwen2", "qwen3"])
def test_qwen_families_round_trip_through_both_readers(family, tmp_path):
    model = models.Llama(dataclasses.replace(TINY, **family), rngs=nnx.Rngs(2))
    path = str(tmp_path / "qwen.gguf")
    gguf_export.save_gguf(model, path, tensor_type="F32")
    reloaded, _ = gguf_io.load_gguf(path)
    np.testing.assert_array_equal(logits(reloaded), logits(model))
    np.testing.assert_allclose(transformers_logits(path), logits(model), atol=1e-4)


def test_permutation_inverts_the_loaders():
    weight = np.random.default_rng(3).standard_normal((4 * 16, 8))
    back = gguf_io.unpermute_rotary_rows(gguf_export.permute_rotary_rows(weight, 4), 4)
    np.testing.assert_array_equal(back, weight)
    assert not np.array_equal(gguf_export.permute_rotary_rows(weight, 4), weight)


@pytest.mark.parametrize("config, kwargs, message", [
    (TINY, dict(tensor_type="Q4_K"), r"tensor_type must be one of \('F32', 'F16', 'Q8_0', "
                                     r"'Q4_0'\), got 'Q4_K'"),
    (dataclasses.replace(TINY, rope_scaling=RopeScaling(rope_type="llama3", factor=8.0,
                                                        low_freq_factor=1.0,
                                                        high_freq_factor=4.0,
                                                        original_max_position_embeddings=64)),
     {}, "GGUF export writes RoPE scaling 'linear' or none; this model has 'llama3'"),
    (dataclasses.replace(TINY, attention_windows=32), {},
     "GGUF export writes the .* families; this model is 'mistral'"),
])
def test_bad_exports_are_refused_before_writing(config, kwargs, message, tmp_path):
    model = models.Llama(config, rngs=nnx.Rngs(0))
    path = tmp_path / "refused.gguf"
    with pytest.raises(ValueError, match=message):
        gguf_export.save_gguf(model, str(path), **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_not_overwritten(tiny, tmp_path):
    path = tmp_path / "exists.gguf"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        gguf_export.save_gguf(tiny, str(path))
    assert path.read_bytes() == b"keep"


@pytest.mark.real_model
def test_smollm2_with_its_tokenizer_round_trips(tmp_path):
    """The real model in F16 with its tokenizer: jaxprune reads back the same model and token
    ids, and transformers' GGUF reader the same token ids. (transformers' reading of the
    weights, 30 s for this file, is checked on the tiny models above; F16 because gguf's NumPy
    Q8_0 quantizer takes most of a minute on 135M weights.)"""
    import transformers

    model, tokenizer = models.load("smollm2-135m")
    path = str(tmp_path / "smollm2.gguf")
    gguf_export.save_gguf(model, path, tokenizer=tokenizer, tensor_type="F16")
    reloaded, reread = gguf_io.load_gguf(path)
    text = "Pruning 2:4 keeps 50% of weights; llama.cpp reads GGUF files in 2026."
    ids = tokenizer.encode(text)
    np.testing.assert_array_equal(reread.encode(text), ids)
    assert reread.bos_id == tokenizer.bos_id and reread.eos_id == tokenizer.eos_id
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path),
                                                              gguf_file="smollm2.gguf")
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids.tolist()
    ours = np.asarray(reloaded(jnp.asarray(ids[None])))
    dense = np.asarray(model(jnp.asarray(ids[None])))
    # float16 weights: logits within 1% of their scale, the next-token choice almost always
    # the same.
    assert np.abs(ours - dense).max() < 0.01 * np.abs(dense).max()
    assert np.mean(ours.argmax(-1) == dense.argmax(-1)) >= 0.9
