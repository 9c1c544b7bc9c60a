"""Weight quantization: round-to-nearest, GPTQ and SparseGPT's joint mode against independent
float64 NumPy implementations written from the papers, and against qwix's own GPTQ."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qwix
from hypothesis import given, settings
from hypothesis import strategies as st
from qwix.contrib import gptq_core

from jaxprune.oneshot import sparsegpt
from jaxprune.oneshot.quantizers import GPTQ, gptq_quantize_layer, rtn_quantize_kernel
from jaxprune.patterns import parse_pattern
from jaxprune.quant import QuantSpec
from tests.jit_check import assert_jit_matches_eager


def correlated_layer(seed, n_in=64, n_out=24, tokens=384):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((n_in, n_in)) / np.sqrt(n_in) + np.eye(n_in)
    X = rng.standard_normal((tokens, n_in)) @ mixing
    X[:, 7] *= 6.0  # an outlier input
    return X, rng.standard_normal((n_out, n_in))


def grid_numpy(w, bits, symmetric):
    """Scale and zero point of one group ``w [rows, g]`` (float64), from the spec's formulas."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if symmetric:
        scale = np.abs(w).max(axis=1) / (high + 0.5)
        zero = np.zeros_like(scale)
    else:
        lo, hi = np.minimum(w.min(axis=1), 0), np.maximum(w.max(axis=1), 0)
        scale = (hi - lo) / (high - low)
    scale = np.where(scale < np.sqrt(np.finfo(np.float32).tiny), 1.0, scale)
    if not symmetric:
        zero = np.clip(np.round(low - lo / scale), low, high)
    return scale, zero


def codes_numpy(w, scale, zero, bits):
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return np.clip(np.round(w / scale + zero), low, high)


def column_sweep_numpy(W, H, *, bits, group, symmetric, keep=None, sparsity=None, nm=None,
                       blocksize=128, damp=0.01):
    """GPTQ (Frantar et al. 2023, Algorithm 1) and SparseGPT's joint mode (Frantar & Alistarh
    2023, Algorithm 1 with its quantization step) in float64, W as [outputs, inputs], every
    update applied at once (no lazy batching). A group's grid is found at its first column from
    the weights as updated so far; a block's unstructured mask at its first column, an N:M
    group's at its first column.

    Returns:
      (weights, codes, keep): weights on the grid, zero where pruned.
    """
    W, H = W.astype(np.float64).copy(), H.astype(np.float64).copy()
    rows, cols = W.shape
    group = group or cols
    H += damp * np.mean(np.diag(H)) * np.eye(cols)
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    keep = np.ones_like(W, bool) if keep is None else keep.copy()
    codes = np.zeros_like(W)
    for j in range(cols):
        if sparsity is not None and j % blocksize == 0:
            stop = min(j + blocksize, cols)
            sal = (W[:, j:stop] ** 2 / np.diag(U)[None, j:stop] ** 2).ravel()
            flat = np.ones(sal.size, bool)
            flat[np.argsort(sal, kind="stable")[:int(np.floor(sparsity * sal.size + 1e-6))]] = 0
            keep[:, j:stop] = flat.reshape(rows, stop - j)
        if nm is not None and j % nm[1] == 0:
            n, m = nm
            sal = W[:, j:j + m] ** 2 / np.diag(U)[None, j:j + m] ** 2
            keep[:, j:j + m] = True
            for r in range(rows):
                keep[r, j + np.argsort(sal[r], kind="stable")[:m - n]] = False
        if j % group == 0:
            scale, zero = grid_numpy(W[:, j:j + group], bits, symmetric)
        codes[:, j] = codes_numpy(W[:, j], scale, zero, bits)
        q = np.where(keep[:, j], scale * (codes[:, j] - zero), 0.0)
        codes[:, j] = np.where(keep[:, j], codes[:, j], zero)
        err = (W[:, j] - q) / U[j, j]
        W[:, j:] -= np.outer(err, U[j, j:])
        W[:, j] = q
    return W, codes, keep


def assert_codes_match(got, ratios):
    """``got`` equals ``round(ratios)`` clipped, except on exact rounding ties (the largest
    magnitude of a symmetric group sits on one: w / scale = 7.5), where the division's last
    bit picks either neighbour."""
    tie = np.abs(np.abs(ratios - np.floor(ratios)) - 0.5) < 1e-9
    want = np.clip(np.round(ratios), -128, 127)
    np.testing.assert_array_equal(got[~tie], want[~tie])
    assert np.all(np.abs(got[tie] - ratios[tie]) <= 0.5 + 1e-9)


def qarray_codes(quantized):
    return np.asarray(quantized.qvalue.astype(jnp.int32))


@pytest.mark.parametrize("bits, group, symmetric", [
    (4, 16, True), (4, 0, False), (8, 32, False), (8, 0, True)])
def test_rtn_matches_numpy(bits, group, symmetric):
    _, W = correlated_layer(0)
    spec = QuantSpec(bits, group, symmetric)
    # float64 on both sides: the largest magnitude of a symmetric group sits on a rounding tie
    # (w / scale = 7.5), which float32's division resolves either way.
    with jax.enable_x64(True):
        layer = rtn_quantize_kernel(jnp.asarray(W.T), spec)
    g = group or W.shape[1]
    for start in range(0, W.shape[1], g):
        w = W[:, start:start + g]
        scale, zero = grid_numpy(w, bits, symmetric)
        codes = qarray_codes(layer.quantized).T[:, start:start + g]
        low, high = spec.code_range
        assert_codes_match(codes, np.clip(w / scale[:, None] + zero[:, None], low - 0.5,
                                          high + 0.5))
        np.testing.assert_allclose(np.asarray(layer.kernel).T[:, start:start + g],
                                   scale[:, None] * (codes - zero[:, None]), rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("bits, group, symmetric, blocksize", [
    (4, 16, True, 16), (4, 0, False, 16), (8, 32, False, 32), (4, 64, True, 64)])
def test_gptq_matches_float64_reference(bits, group, symmetric, blocksize):
    X, W = correlated_layer(1)
    H = X.T @ X
    spec = QuantSpec(bits, group, symmetric)
    want_W, want_codes, _ = column_sweep_numpy(W, H, bits=bits, group=group,
                                               symmetric=symmetric, blocksize=blocksize)
    with jax.enable_x64(True):
        layer = gptq_quantize_layer(jnp.asarray(W.T), jnp.asarray(H), spec,
                                    blocksize=blocksize)
        got_W = np.asarray(layer.kernel).T
        np.testing.assert_array_equal(qarray_codes(layer.quantized).T, want_codes)
        np.testing.assert_allclose(np.asarray(qwix.dequantize(layer.quantized)).T, got_W,
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_W, want_W, rtol=0, atol=1e-5 * np.abs(W).max())


def test_gptq_matches_qwix_gptq_with_groups_inside_blocks():
    """qwix's own GPTQ (a port of the authors' code): a group that starts inside a block takes
    its grid from the weights as of the block's start; the codes must agree exactly. (qwix
    0.1.8's GPTQ runs symmetric grids only: with a zero point it fails on ``zero_point and
    ...``.)"""
    X, W = correlated_layer(2, n_in=32, n_out=8)  # qwix's loop runs op by op: keep it small
    H = X.T @ X
    how = qwix._src.core.qarray.HowToQuantize(
        qtype=jnp.int4, channelwise_axes=(0,), tiled_axes={1: 16},
        calibration_method="absmax")
    with jax.enable_x64(True):
        want, _ = gptq_core.quantize_weight(jnp.asarray(W), jnp.asarray(H), how, blocksize=32)
        layer = gptq_quantize_layer(jnp.asarray(W.T), jnp.asarray(H),
                                    QuantSpec(4, 16, True), blocksize=32)
        np.testing.assert_array_equal(qarray_codes(layer.quantized).T,
                                      np.asarray(want.qvalue.astype(jnp.int32)))
        np.testing.assert_allclose(np.asarray(layer.quantized.scale).T,
                                   np.asarray(want.scale), rtol=1e-12)


@pytest.mark.parametrize("setting", [
    dict(sparsity=0.5, bits=4, group=16, symmetric=True, blocksize=16),
    dict(pattern="2:4", bits=4, group=0, symmetric=False, blocksize=32),
    dict(pattern="4:8", bits=8, group=32, symmetric=True, blocksize=32)])
def test_joint_sparsegpt_gptq_matches_float64_reference(setting):
    X, W = correlated_layer(3)
    H = X.T @ X
    pattern = parse_pattern(setting["pattern"]) if "pattern" in setting else None
    spec = QuantSpec(setting["bits"], setting["group"], setting["symmetric"])
    want_W, want_codes, want_keep = column_sweep_numpy(
        W, H, bits=spec.bits, group=spec.group_size, symmetric=spec.symmetric,
        sparsity=setting.get("sparsity"), nm=(pattern.n, pattern.m) if pattern else None,
        blocksize=setting["blocksize"])
    with jax.enable_x64(True):
        result = sparsegpt.sparsegpt_sweep(
            jnp.asarray(W.T), jnp.asarray(H), sparsity=setting.get("sparsity"),
            pattern=pattern, quant=spec, blocksize=setting["blocksize"])
        got_W = np.asarray(result.kernel).T
        np.testing.assert_array_equal(qarray_codes(result.quantized).T, want_codes)
    np.testing.assert_array_equal(np.asarray(result.keep).T, want_keep)
    np.testing.assert_allclose(got_W, want_W, rtol=0, atol=1e-5 * np.abs(W).max())
    assert np.all(got_W[~want_keep] == 0)
    if pattern is not None:
        kept = np.asarray(result.keep).T.reshape(W.shape[0], -1, pattern.m).sum(-1)
        assert np.all(kept == pattern.n)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([4, 8]),
       group=st.sampled_from([0, 8, 32]), symmetric=st.booleans())
def test_gptq_keeps_a_pruned_layers_zeros_and_its_nm_pattern(seed, bits, group, symmetric):
    X, W = correlated_layer(seed, n_in=32, n_out=8, tokens=96)
    pruned, keep, _ = sparsegpt.sparsegpt_prune_layer(
        jnp.asarray(W.T, jnp.float32), jnp.asarray(X.T @ X, jnp.float32),
        pattern=parse_pattern("2:4"), blocksize=32)
    layer = gptq_quantize_layer(pruned, jnp.asarray(X.T @ X, jnp.float32),
                                QuantSpec(bits, group, symmetric), keep=keep, blocksize=32)
    kernel = np.asarray(layer.kernel)
    assert np.all(kernel[~np.asarray(keep)] == 0)
    assert np.all((kernel != 0).T.reshape(8, -1, 4).sum(-1) <= 2)
    np.testing.assert_array_equal(np.asarray(qwix.dequantize(layer.quantized)), kernel)


def test_gptq_output_error_below_round_to_nearest():
    X, W = correlated_layer(4)
    spec = QuantSpec(4, 16, True)
    rtn = np.asarray(rtn_quantize_kernel(jnp.asarray(W.T, jnp.float32), spec).kernel)
    gptq = np.asarray(gptq_quantize_layer(jnp.asarray(W.T, jnp.float32),
                                          jnp.asarray(X.T @ X, jnp.float32), spec).kernel)
    error = {name: np.linalg.norm(X @ k - X @ W.T) for name, k in
             (("rtn", rtn), ("gptq", gptq))}
    assert error["gptq"] < 0.8 * error["rtn"]


def test_sweep_jit_matches_eager():
    X, W = correlated_layer(5, n_in=32, n_out=8, tokens=96)
    assert_jit_matches_eager(
        sparsegpt._sparsegpt_rows, jnp.asarray(W, jnp.float32),
        jnp.asarray(X.T @ X, jnp.float32), jnp.float32(0.01), None, sparsity=0.5, n=0, m=0,
        blocksize=16, quant=QuantSpec(4, 8, False), rtol=1e-4, atol=1e-5)


def test_storage_bytes():
    # int4 codes packed two per byte; one float16 scale per 128 inputs of each output.
    assert QuantSpec(4, 128, True).storage_bytes(576, 1536) == 576 * 1536 // 2 + 2 * 1536 * 4
    assert QuantSpec(8, 0, False).storage_bytes(64, 10) == 640 + 2 * 10 + 10


@pytest.mark.parametrize("kwargs, message", [
    (dict(bits=3), r"bits must be one of \(4, 8\), got 3"),
    (dict(bits=True), "bits must be one of"),
    (dict(group_size=-1), "group_size must be 0 .* or a positive number of inputs, got -1"),
    (dict(symmetric="yes"), "symmetric must be True or False"),
])
def test_bad_spec(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        QuantSpec(**kwargs)


def test_group_size_not_dividing_the_inputs_is_refused_naming_the_layer():
    X, W = correlated_layer(6, n_in=48)
    with pytest.raises(ValueError, match="group_size 32 does not divide the 48 inputs of "
                                         "'blocks.0.q'"):
        GPTQ(QuantSpec(4, 32)).quantize_layer(jnp.asarray(W.T), None,
                                               None, path="blocks.0.q")


@pytest.mark.parametrize("bits", [8, 4])
def test_the_embedding_table_rounds_each_token_to_its_own_grid_like_float64_numpy(bits):
    from jaxprune.oneshot.quantizers import quantize_embedding
    from tests.families import tiny_model

    model = tiny_model("llama3.2")  # tied: the table is the head too
    table = np.asarray(model.embed_tokens.embedding[...], np.float64)
    quantized, qarray = quantize_embedding(model, bits)
    high = 2 ** (bits - 1) - 1
    scale = np.abs(table).max(axis=1, keepdims=True) / (high + 0.5)  # one per token
    want = np.clip(np.round(table / scale), -high - 1, high) * scale
    got = np.asarray(quantized.embed_tokens.embedding[...], np.float64)
    # Each row's largest magnitude sits on a rounding tie (+-(high + 0.5)): either side.
    tie = np.abs(np.abs(table / scale) - (high + 0.5)) < 1e-4
    np.testing.assert_allclose(got[~tie], want[~tie], rtol=1e-5, atol=1e-7)
    assert np.all(np.abs(got - table)[tie] <= np.broadcast_to(scale, tie.shape)[tie] * 0.5001)
    assert qarray.scale.shape == (1, table.shape[0])
    np.testing.assert_array_equal(np.asarray(model.embed_tokens.embedding[...]), table)
    with pytest.raises(ValueError, match="quant_embedding_bits must be one of"):
        quantize_embedding(model, 6)
