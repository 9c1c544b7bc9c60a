"""RIA as a one-shot method: registered by name, exact against a float64 numpy reference, and
added without touching the engine."""

import inspect
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import models, oneshot, paths
from jaxprune.oneshot import engine, registry
from tests.oneshot_fields import oneshot_fields

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)


def ria_reference(kernel: np.ndarray, sq_norms: np.ndarray, alpha: float) -> np.ndarray:
    """Zhang et al. 2024, in the paper's [out, in] orientation, float64:
    RI_ij = |W_ij| / sum_k |W_ik| + |W_ij| / sum_k |W_kj|, times ||X_j||_2 ** alpha."""
    w = np.abs(np.asarray(kernel, np.float64).T)  # [out, in]
    relative = w / w.sum(axis=1, keepdims=True) + w / w.sum(axis=0, keepdims=True)
    return (relative * np.sqrt(np.asarray(sq_norms, np.float64))[None, :] ** alpha).T


def keep_per_output(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Keeps the highest scores of each output column of an [in, out] array."""
    pruned = int(round(sparsity * scores.shape[0]))
    order = np.argsort(scores, axis=0, kind="stable")
    keep = np.ones_like(scores, bool)
    np.put_along_axis(keep, order[:pruned], False, axis=0)
    return keep


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_ria_layer_matches_the_paper_in_float64(alpha):
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((24, 16)).astype(np.float32)
    sq_norms = (rng.exponential(size=24) * 40).astype(np.float32)
    scores = oneshot.ria_score(jnp.asarray(kernel), jnp.asarray(sq_norms), alpha)
    np.testing.assert_allclose(scores, ria_reference(kernel, sq_norms, alpha), rtol=1e-5)
    stats = oneshot.InputStats(jnp.asarray(sq_norms), None, jnp.asarray(100))
    pruned = oneshot.ria_method(alpha).prune_layer(
        jnp.asarray(kernel), stats, sparsity=0.5,
        pattern=oneshot.engine.parse_pattern("per_output"), path="w")
    expected = keep_per_output(ria_reference(kernel, sq_norms, alpha), 0.5)
    np.testing.assert_array_equal(pruned.keep, expected)
    np.testing.assert_array_equal(pruned.kernel, np.where(expected, kernel, 0))


def test_ria_by_name_through_the_engine_matches_the_reference_on_block_0():
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (4, 16))
    fields = oneshot_fields(method="ria", ria_alpha=0.5, sparsity=0.5, pattern="per_output",
                            batch_size=2)
    settings = oneshot.settings_from_config(fields)
    result = oneshot.prune_oneshot(model, segments, settings, progress=False)
    # Block 0's inputs do not depend on any pruning: recompute its statistics independently.
    hidden = model.embed(jnp.asarray(segments))
    cos, sin = model.rope(segments.shape[1])
    _, inputs = model.layers[0].forward_with_inputs(hidden, cos, sin)
    masks = dict(paths.leaves_with_paths(result.masks))
    kernels = dict(paths.leaves_with_paths(nnx.state(model, nnx.Param)))
    for linear in [t for t in model.prunable_linears() if t.block == 0]:
        x = np.asarray(inputs[linear.group], np.float64)
        x = x.reshape(-1, x.shape[-1])
        kernel = np.asarray(kernels[linear.path])
        expected = keep_per_output(ria_reference(kernel, (x * x).sum(0), 0.5), 0.5)
        np.testing.assert_array_equal(masks[linear.path], expected, err_msg=linear.path)
    assert oneshot.achieved_sparsity(result) == 0.5


def test_ria_is_one_file_and_one_registry_line():
    assert registry.METHODS["ria"] is oneshot.ria_method
    engine_source = inspect.getsource(engine)
    assert not re.search(r"\bria\b", engine_source, re.IGNORECASE)
    # No per-method branch in the engine: it never compares a method's name.
    for name in registry.METHODS:
        assert f'"{name}"' not in engine_source, name


def test_unknown_method_lists_the_registry():
    with pytest.raises(ValueError, match=r"config.method='rial' is not one of \['alps', "
                                         r"'magnitude', 'obd', 'obd_fisher', 'ria', "
                                         r"'sparsegpt', 'wanda', 'wanda_pp'\]"):
        oneshot.settings_from_config({"method": "rial"})
    with pytest.raises(ValueError, match=r"config.method='ria': ria_alpha must be a number"):
        oneshot.settings_from_config({"method": "ria", "ria_alpha": -1.0})
