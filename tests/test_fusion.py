"""Layer fusion (jaxprune/structured/fusion.py): LaCo's merge, the average baseline and the
low-rank fit, against numpy written from the papers, on a tiny random Llama."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import models, structured
from jaxprune.structured import fusion


def tiny(layers=5, seed=0, **overrides):
    config = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=layers, num_heads=4,
                                num_kv_heads=2, intermediate_size=48, head_dim=8, **overrides)
    return models.Llama(config, rngs=nnx.Rngs(seed))


def with_tensors(model, change):
    tensors = models.hf_tensors_from_model(model)
    change(tensors)
    return models.model_from_hf_tensors(model.config, tensors)


def block(tensors, b):
    prefix = f"model.layers.{b}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def segments(count=6, length=16, seed=1):
    return np.random.default_rng(seed).integers(1, 64, (count, length)).astype(np.int32)


def copy_block(source, target):
    def change(tensors):
        for name, value in block(tensors, source).items():
            tensors[f"model.layers.{target}.{name}"] = value.copy()
    return change


@pytest.mark.parametrize("method", [fusion.LACO, fusion.AVERAGE])
def test_fusing_identical_blocks_gives_that_block(method):
    model = with_tensors(tiny(), copy_block(2, 3))
    fused = structured.fuse_runs(model, [2], 2, method)
    before, after = models.hf_tensors_from_model(model), models.hf_tensors_from_model(fused)
    assert fused.config.num_layers == 4
    for name, value in block(before, 2).items():
        np.testing.assert_allclose(block(after, 2)[name], value, rtol=0, atol=1e-6)
    for name, value in block(before, 4).items():  # the blocks above move down by one
        np.testing.assert_array_equal(block(after, 3)[name], value)


def test_laco_adds_the_differences_of_every_linear_layer_and_keeps_the_norms():
    model = tiny(seed=4)
    tensors = models.hf_tensors_from_model(model)
    fused = models.hf_tensors_from_model(structured.fuse_runs(model, [1], 3, fusion.LACO))
    run = [block(tensors, b) for b in (1, 2, 3)]
    for name, value in block(fused, 1).items():
        if "norm" in name:
            np.testing.assert_array_equal(value, run[0][name])
        else:  # theta_1 + (theta_2 - theta_1) + (theta_3 - theta_1), in float64
            expected = sum(np.float64(r[name]) for r in run[1:]) - np.float64(run[0][name])
            np.testing.assert_allclose(value, expected, rtol=0, atol=1e-5)
    assert fusion.LACO.keeps_first_block


def test_average_of_a_pair_is_the_old_interpolation_and_cut_depth_uses_it():
    model = tiny(seed=5)
    plan = structured.DepthPlan(fuse=(0, 3))
    expected = models.hf_tensors_from_model(
        structured.fuse_blocks(structured.fuse_blocks(model, 3), 0))
    for fused in (structured.fuse_runs(model, [0, 3], 2, fusion.AVERAGE),
                  structured.cut_depth(model, plan)):
        got = models.hf_tensors_from_model(fused)
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6)


def ridge_reference(x, t, rank, damp):
    """Reduced-rank ridge regression from Mukherjee & Zhu (2011): least squares on the
    augmented data [X; sqrt(lam) I], [T; 0], then the rank-r projection on the top right
    singular vectors of the augmented fitted values; float64 numpy."""
    lam = damp * np.mean(np.sum(x * x, axis=0))
    xa = np.vstack([x, np.sqrt(lam) * np.eye(x.shape[1])])
    ta = np.vstack([t, np.zeros((x.shape[1], t.shape[1]))])
    b = np.linalg.lstsq(xa, ta, rcond=None)[0]
    vt = np.linalg.svd(xa @ b, full_matrices=False)[2]
    return b @ vt[:rank].T @ vt[:rank]


@pytest.mark.parametrize("rank", [2, 5, 7])
def test_reduced_rank_ridge_matches_the_augmented_least_squares_reference(rank):
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((300, 9)) @ rng.standard_normal((9, 9))  # correlated inputs
    t = x @ rng.standard_normal((9, 7)) + 0.3 * rng.standard_normal((300, 7))
    got = fusion.reduced_rank_ridge(x.T @ x, x.T @ t, rank, 0.05)
    np.testing.assert_allclose(got, ridge_reference(x, t, rank, 0.05), rtol=1e-8, atol=1e-10)
    assert np.linalg.matrix_rank(got, tol=1e-8) == rank


def test_reduced_rank_ridge_reports_nan_and_a_singular_gram_matrix():
    with pytest.raises(ValueError, match="hold NaN or inf"):
        fusion.reduced_rank_ridge(np.full((3, 3), np.nan), np.ones((3, 2)), 2, 0.01)
    with pytest.raises(ValueError, match="not positive definite: no calibration activation"):
        fusion.reduced_rank_ridge(np.zeros((3, 3)), np.ones((3, 2)), 2, 0.01)


def silence(model, b):
    """Block ``b`` adds nothing to the residual stream: its output projections are zero."""
    def change(tensors):
        for proj in ("self_attn.o_proj", "mlp.down_proj"):
            tensors[f"model.layers.{b}.{proj}.weight"] *= 0.0
    return with_tensors(model, change)


def test_low_rank_fusion_of_a_block_that_adds_nothing_changes_nothing():
    # The silent block passes its input through unchanged, so nothing is missing: the fitted
    # updates are zero and the fused model is the model without that block, exactly.
    model = silence(tiny(seed=6), 3)
    fused = models.hf_tensors_from_model(structured.fuse_runs(
        model, [2], 2, fusion.LowRankFusion(rank=4), segments=segments()))
    dropped = models.hf_tensors_from_model(structured.remove_blocks(model, [3]))
    assert fused.keys() == dropped.keys()
    for name, value in dropped.items():
        np.testing.assert_allclose(fused[name], value, rtol=0, atol=1e-7)


def test_runs_below_join_each_run_of_removed_blocks_to_the_kept_block_under_it():
    assert structured.runs_below([8, 3, 2, 5]) == [(1, 3), (4, 2), (7, 2)]
    assert structured.runs_below([]) == []
    with pytest.raises(ValueError, match="block 0 cannot be folded: no block lies below it"):
        structured.runs_below([0, 4])


def test_folding_blocks_fits_each_run_into_the_block_below_bottom_up():
    model, data = tiny(layers=6, seed=9), segments(4, 12)
    method = fusion.LowRankFusion(rank=6)
    folded = structured.fold_blocks(model, [5, 2, 3], method, segments=data)
    lower = method.fuse(model, 1, 3, segments=data)  # blocks 2, 3 into 1
    expected = method.fuse(lower, 2, 2, segments=data, reference=model, reference_first=4)
    assert folded.config.num_layers == 3
    got, want = models.hf_tensors_from_model(folded), models.hf_tensors_from_model(expected)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)
    with pytest.raises(ValueError, match=r"blocks 0..1 does not fit: .* never fuses block 0"):
        structured.fold_blocks(model, [1], fusion.LACO)


def run_error(model, fused, first, length, data):
    """Mean squared distance between the dense run's output and the fused block's."""
    cos, sin = model.rope(data.shape[1])
    h = model.embed(jnp.asarray(data))
    for b in range(first):
        h = model.layers[b](h, cos, sin)
    dense = h
    for b in range(first, first + length):
        dense = model.layers[b](dense, cos, sin)
    return float(jnp.mean((fused.layers[first](h, cos, sin) - dense) ** 2))


def test_full_rank_fit_is_the_ridge_solution_and_beats_lower_ranks_and_dropping():
    model, data = tiny(seed=7), segments(8, 24)
    fused = {rank: structured.fuse_runs(model, [1], 2, fusion.LowRankFusion(rank=rank, damp=1e-4),
                                        segments=data, batch_size=4)  # statistics of 2 batches
             for rank in (2, 32)}
    errors = {rank: run_error(model, net, 1, 2, data) for rank, net in fused.items()}
    dropped = run_error(model, structured.remove_blocks(model, [2]), 1, 2, data)
    assert errors[32] < errors[2] < dropped
    # At full rank the o_proj update is the unconstrained ridge fit: the update the kept block
    # gets equals numpy's least squares on the block's own o_proj inputs.
    cos, sin = model.rope(data.shape[1])
    h = model.layers[0](model.embed(jnp.asarray(data)), cos, sin)
    out, inputs = model.layers[1].forward_with_inputs(h, cos, sin)
    target = model.layers[2](model.layers[1](h, cos, sin), cos, sin) - out
    x = np.asarray(inputs["o"], np.float64).reshape(-1, 32)
    t = np.asarray(target, np.float64).reshape(-1, 32)
    update = (models.hf_tensors_from_model(fused[32])["model.layers.1.self_attn.o_proj.weight"]
              - models.hf_tensors_from_model(model)["model.layers.1.self_attn.o_proj.weight"])
    np.testing.assert_allclose(update.T, ridge_reference(x, t, 32, 1e-4), rtol=0, atol=2e-4)


def test_fuse_runs_goes_bottom_up_against_the_dense_runs():
    model, data = tiny(layers=5, seed=8), segments(4, 12)
    method = fusion.LowRankFusion(rank=6)
    both = structured.fuse_runs(model, [3, 1], 2, method, segments=data)
    lower = method.fuse(model, 1, 2, segments=data)
    upper = method.fuse(lower, 2, 2, segments=data, reference=model, reference_first=3)
    assert both.config.num_layers == 3
    got, expected = models.hf_tensors_from_model(both), models.hf_tensors_from_model(upper)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)


@pytest.mark.parametrize("method, starts, length, message", [
    (fusion.LACO, [0], 2, r"blocks 0..1 does not fit: .* within blocks 1..4 \(this method "
                          r"never fuses block 0"),
    (fusion.AVERAGE, [4], 2, r"blocks 4..5 does not fit: the model has 5 blocks"),
    (fusion.AVERAGE, [1], 1, "at least 2 blocks, got length=1"),
    (fusion.AVERAGE, [1, 2], 2, r"blocks 1..2 and 2..3 overlap"),
    (fusion.LowRankFusion(rank=0), [1], 2, r"rank must be an integer in \[1, 32\]"),
    (fusion.LowRankFusion(rank=33), [1], 2, r"rank must be an integer in \[1, 32\]"),
    (fusion.LowRankFusion(rank=8, damp=0.0), [1], 2, "damp must be a positive finite number"),
])
def test_bad_runs_and_settings_are_refused_before_any_work(method, starts, length, message):
    with pytest.raises(ValueError, match=message):
        structured.fuse_runs(tiny(), starts, length, method, segments=segments())


def test_low_rank_fusion_needs_data_and_refuses_sandwich_norms():
    with pytest.raises(ValueError, match="fits on calibration data: pass segments"):
        structured.fuse_runs(tiny(), [1], 2, fusion.LowRankFusion(rank=8))
    with pytest.raises(ValueError, match="with sandwich_norms"):
        structured.fuse_runs(tiny(sandwich_norms=True, norm_plus_one=True), [1], 2,
                             fusion.LowRankFusion(rank=8), segments=segments())


def test_the_statistics_are_the_same_under_jit_and_eagerly():
    model, data = tiny(seed=2), segments(2, 8)
    inputs = fusion._run_inputs(model, 1, data, 2)
    rope = model.rope(8)
    run = list(model.layers)[1:3]
    jitted = fusion._fit_statistics(model.layers[1], run, inputs, rope, "down")
    with jax.disable_jit():
        eager = fusion._fit_statistics(model.layers[1], run, inputs, rope, "down")
    for a, b in zip(jitted, eager, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
