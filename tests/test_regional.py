"""Wanda++'s regional gradient score: the gradients against torch autograd in float64 through
transformers' own decoder block on the same weights, the score against its formula, Wanda's
masks at alpha 0, and bad settings refused."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import models, oneshot, paths
from tests import lazy
from tests.oneshot_fields import oneshot_fields
from tests.test_llama_parity import reference_model

torch = lazy.LazyModule("torch")

NAMES = ("self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj", "self_attn/o_proj",
         "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj")
CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)


def torch_regional_gradients(reference, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """G of each kernel of block 0 by autograd in float64, one window at a time, in Flax's
    [in, out] layout."""
    model = reference.double()
    layer = model.model.layers[0]
    length = inputs.shape[1]
    mask = torch.triu(torch.full((length, length), float("-inf"), dtype=torch.float64), 1)
    totals = {}
    for window in inputs:
        h = torch.as_tensor(window[None], dtype=torch.float64)
        position_embeddings = model.model.rotary_emb(h, torch.arange(length)[None])
        layer.zero_grad()
        out = layer(h, attention_mask=mask[None, None], position_embeddings=position_embeddings)
        out = out[0] if isinstance(out, tuple) else out
        torch.linalg.norm(out).backward()
        for name in NAMES:
            linear = layer.get_submodule(name.replace("/", "."))
            grad = linear.weight.grad.numpy().T ** 2
            totals[name] = totals.get(name, 0) + grad
    return {name: np.sqrt(total / len(inputs)) for name, total in totals.items()}


def test_regional_gradients_match_torch_autograd_in_float64():
    reference = reference_model("llama", tied=False, seed=3, num_hidden_layers=1,
                                hidden_size=32, intermediate_size=48, head_dim=8)
    tensors = {k: v.numpy() for k, v in reference.state_dict().items()}
    model = models.model_from_hf_tensors(models.config_from_hf_dict(reference.config.to_dict()),
                                         tensors)
    rng = np.random.default_rng(4)
    inputs = rng.standard_normal((3, 10, reference.config.hidden_size))
    cos, sin = model.rope(10)
    batches = [jnp.asarray(inputs[:2], jnp.float32), jnp.asarray(inputs[2:], jnp.float32)]
    ours = oneshot.regional_gradients(model.layers[0], NAMES, batches, cos, sin)
    theirs = torch_regional_gradients(reference, inputs)
    for name in NAMES:
        scale = np.abs(theirs[name]).max()
        assert scale > 0, name
        np.testing.assert_allclose(ours[name], theirs[name], rtol=2e-4, atol=2e-4 * scale,
                                   err_msg=name)


def test_rgs_score_is_the_papers_formula():
    rng = np.random.default_rng(5)
    kernel = rng.standard_normal((16, 8)).astype(np.float32)
    sq_norms = rng.exponential(size=16).astype(np.float32) * 30
    gradient = rng.exponential(size=(16, 8)).astype(np.float32) * 0.01
    expected = np.abs(kernel.astype(np.float64)) * (
        100 * gradient.astype(np.float64) + np.sqrt(sq_norms.astype(np.float64))[:, None])
    np.testing.assert_allclose(oneshot.rgs_score(jnp.asarray(kernel), jnp.asarray(sq_norms),
                                                 jnp.asarray(gradient)), expected, rtol=1e-5)


def test_wanda_pp_by_name_is_wanda_at_alpha_zero_and_differs_at_100():
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (4, 16))

    def kept(**overrides):
        fields = oneshot_fields(pattern="2:4", batch_size=2, **overrides)
        result = oneshot.prune_oneshot(model, segments, oneshot.settings_from_config(fields),
                                       progress=False)
        return {p: np.asarray(m) for p, m in paths.leaves_with_paths(result.masks)
                if m is not None}

    wanda, flat, regional = kept(), kept(method="wanda_pp", rgs_alpha=0.0), kept(
        method="wanda_pp", rgs_alpha=100.0)
    for path in wanda:
        np.testing.assert_array_equal(flat[path], wanda[path], err_msg=path)
    assert any((regional[p] != wanda[p]).any() for p in wanda)


def test_bad_rgs_alpha_and_a_mesh_are_refused():
    with pytest.raises(ValueError, match="config.method='wanda_pp': rgs_alpha must be a "
                                         "finite number >= 0, got -1.0"):
        oneshot.settings_from_config(oneshot_fields(method="wanda_pp", rgs_alpha=-1.0))
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (4, 16))
    fields = oneshot_fields(method="wanda_pp", pattern="2:4", batch_size=2, mesh_data=2)
    with pytest.raises(ValueError, match="computes its regional gradient on one device"):
        oneshot.prune_oneshot(model, segments, oneshot.settings_from_config(fields),
                              progress=False)
