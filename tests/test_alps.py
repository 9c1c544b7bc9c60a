"""ALPS: exact against a float64 numpy reference written from the paper (ADMM with its penalty
schedule, then the conjugate-gradient refit), better than the masks it starts from, through the
engine by name, and bad settings refused before work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import masks, models, oneshot
from jaxprune.patterns import parse_pattern
from tests.jit_check import assert_jit_matches_eager
from tests.oneshot_fields import oneshot_fields

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)


def project(z, sparsity, group):
    """The largest magnitudes of ``z`` [in, out]: of the whole array, or of each group of
    ``group`` consecutive inputs of an output (N:M, N = group / 2 here)."""
    if group:
        keep = np.zeros(z.shape, bool)
        for start in range(0, z.shape[0], group):
            block = np.abs(z[start:start + group])
            order = np.argsort(-block, axis=0, kind="stable")[:group // 2]
            np.put_along_axis(keep[start:start + group], order, True, axis=0)
        return np.where(keep, z, 0.0), keep
    kept = z.size - int(np.floor(sparsity * z.size + 1e-9))
    flat = np.argsort(-np.abs(z).reshape(-1), kind="stable")[:kept]
    keep = np.zeros(z.size, bool)
    keep[flat] = True
    keep = keep.reshape(z.shape)
    return np.where(keep, z, 0.0), keep


def penalty_check(rho, grown, moved, kept):
    """The schedule every third iteration: (rho, grown, restart, stop)."""
    if moved > 0.1 * kept:
        return rho * 1.3, True, False, False
    if moved > 0.005 * kept:
        return rho * 1.2, True, False, False
    if moved > 0:
        return (rho * 1.1, grown, False, False) if grown else (rho / 5, grown, True, False)
    return (rho, grown, False, True) if grown else (rho / 5, grown, False, False)


def alps_reference(kernel, x, sparsity, group, *, rho=0.1, iters=300, cg_steps=10, damp=0.01):
    """Meng et al. 2024 in float64: the scaled layer-wise problem by ADMM, then CG."""
    w = np.asarray(kernel, np.float64)
    flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    h = flat.T @ flat
    h += damp * np.mean(np.diag(h)) * np.eye(len(h))
    scale = np.sqrt(np.diag(h)) + 1e-8
    h = h / np.outer(scale, scale)
    b0 = w * scale[:, None]
    rhs = h @ b0
    d0, support = project(b0, sparsity, group)
    kept = int(support.sum())
    b, d, v, grown = b0, d0, np.zeros_like(b0), False
    for i in range(iters):
        b = np.linalg.solve(h + rho * np.eye(len(h)), rhs - v + rho * d)
        d, new_support = project(b + v / rho, sparsity, group)
        v = v + rho * (b - d)
        if (i + 1) % 3:
            continue
        moved = int((new_support != support).sum())
        rho, grown, restart, stop = penalty_check(rho, grown, moved, kept)
        if stop:
            break
        if restart:
            b, d, v = b0, d0, np.zeros_like(b0)
        support, rho = new_support, min(rho, 1e6)
        if i >= 30 and moved < 0.0003 * kept:
            break
    b, keep = project(b, sparsity, group)
    residual = (rhs - h @ b) * keep
    direction, rz = residual, (residual ** 2).sum(0)
    for _ in range(cg_steps):
        alpha = rz / (direction * (h @ direction)).sum(0)
        b = b + alpha * direction
        residual = (residual - alpha * (h @ direction)) * keep
        rz, previous = (residual ** 2).sum(0), rz
        direction = residual + rz / previous * direction
    return b / scale[:, None], keep, i + 1


def layer_case(seed, dim=32, out=24):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim) + np.eye(dim)
    x = (rng.standard_normal((4, 64, dim)) @ mixing).astype(np.float32)
    kernel = (rng.standard_normal((dim, out)) / 4).astype(np.float32)
    return x, kernel, oneshot.batch_input_stats(jnp.asarray(x), with_gram=True)


def output_error(kernel, new_kernel, x):
    flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    return float(np.sum((flat @ (np.asarray(new_kernel, np.float64) - kernel)) ** 2))


@pytest.mark.parametrize("pattern_name,sparsity", [("unstructured", 0.5), ("unstructured", 0.7),
                                                   ("2:4", 0.5)])
def test_alps_layer_matches_the_paper_in_float64(pattern_name, sparsity):
    pattern = parse_pattern(pattern_name)
    x, kernel, stats = layer_case(7)
    result = oneshot.ALPS().prune_layer(jnp.asarray(kernel), stats, sparsity=sparsity,
                                        pattern=pattern, path="w")
    group = pattern.m if pattern.is_n_of_m else 0
    expected, keep, iterations = alps_reference(kernel, x, sparsity, group)
    assert result.info["alps_iters"] == iterations < 300
    np.testing.assert_array_equal(result.keep, keep)
    np.testing.assert_allclose(result.kernel, expected, atol=1e-5 * np.abs(expected).max())
    # Better than pruning by magnitude, and than SparseGPT, on the layer-wise objective.
    magnitude = np.where(project(kernel, sparsity, group)[1], kernel, 0)
    sparsegpt = oneshot.SparseGPT().prune_layer(jnp.asarray(kernel), stats, sparsity=sparsity,
                                                pattern=pattern, path="w").kernel
    alps_error = output_error(kernel, result.kernel, x)
    assert alps_error < output_error(kernel, sparsegpt, x) < output_error(kernel, magnitude, x)


def test_alps_under_jit_equals_eager():
    x, kernel, stats = layer_case(8, dim=16, out=8)
    options = dict(sparsity=0.5, pattern=parse_pattern("2:4"), max_iters=40, cg_steps=4)
    assert_jit_matches_eager(oneshot.alps_prune_layer, jnp.asarray(kernel), stats.gram,
                             **options)


def test_alps_by_name_through_the_engine_prunes_every_kernel_to_its_pattern():
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (4, 16))
    fields = oneshot_fields(method="alps", sparsity=0.5, pattern="2:4", batch_size=2)
    settings = oneshot.settings_from_config(fields)
    assert settings.method == oneshot.ALPS(0.1, 300, 10, 0.01)
    result = oneshot.prune_oneshot(model, segments, settings, progress=False)
    kept = [m for m in jax.tree.leaves(result.masks) if m is not None]
    assert len(kept) == 7 * CONFIG.num_layers
    assert all(masks.is_n_of_m(m, 2, 4) for m in kept)
    assert all(1 <= row["alps_iters"] <= 300 for row in result.layers)


@pytest.mark.parametrize("field,value,error", [
    ("alps_rho", 0.0, "alps_rho must be a finite number > 0, got 0.0"),
    ("alps_rho", float("inf"), "alps_rho must be a finite number > 0, got inf"),
    ("alps_iters", 0, "alps_iters must be >= 1, got 0"),
    ("alps_cg_steps", -1, "alps_cg_steps must be >= 0, got -1"),
    ("alps_damp", -0.01, "alps_damp must be a finite number > 0, got -0.01"),
])
def test_bad_alps_settings_are_refused_naming_the_field(field, value, error):
    fields = oneshot_fields(method="alps", **{field: value})
    with pytest.raises(ValueError, match=f"config.method='alps': {error}"):
        oneshot.registry.from_registry(oneshot.registry.METHODS, "method", fields)


def test_alps_refuses_global_selection():
    with pytest.raises(ValueError, match="pattern 'global' is not supported"):
        oneshot.ALPS().check(parse_pattern("global"))
