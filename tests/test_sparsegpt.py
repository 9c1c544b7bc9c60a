"""SparseGPT against an independent float64 NumPy implementation of the paper's Algorithm 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.oneshot.sparsegpt import check_sparsegpt_settings, sparsegpt_prune_layer
from jaxprune.patterns import parse_pattern


def sparsegpt_numpy(W, H, sparsity=None, n=0, m=0, blocksize=128, damp=0.01):
    """Algorithm 1 of Frantar & Alistarh (2023) in float64, W as [outputs, inputs].

    Unstructured: in each block of `blocksize` columns, prune floor(sparsity * entries) entries
    with the smallest w^2 / [H^-1]_jj^2 (jaxprune's counting rule; the authors' code prunes one
    more per block). N:M: in each group of m columns, each row keeps its n largest.
    """
    W = W.astype(np.float64).copy()
    H = H.astype(np.float64).copy()
    rows, cols = W.shape
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * np.mean(np.diag(H)) * np.eye(cols)
    Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # upper: H^-1 = U^T U
    keep = np.ones_like(W, dtype=bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].copy()
        Q1 = np.zeros_like(W1)
        Err1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        keep1 = np.ones_like(W1, dtype=bool)
        if m == 0:
            saliency = (W1**2 / np.diag(Hinv1)[None, :] ** 2).ravel()
            prune = int(np.floor(sparsity * saliency.size + 1e-6))
            order = np.argsort(saliency, kind="stable")
            flat = keep1.ravel()
            flat[order[:prune]] = False
            keep1 = flat.reshape(W1.shape)
        for i in range(i2 - i1):
            if m and i % m == 0:
                sal = W1[:, i:i + m] ** 2 / np.diag(Hinv1)[i:i + m][None, :] ** 2
                for r in range(rows):
                    lowest = np.argsort(sal[r], kind="stable")[: m - n]
                    keep1[r, i + lowest] = False
            w = W1[:, i]
            d = Hinv1[i, i]
            q = np.where(keep1[:, i], w, 0.0)
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= np.outer(err, Hinv1[i, i:])
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        keep[:, i1:i2] = keep1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W, keep


def correlated_layer(seed, n_in=96, n_out=40, tokens=512, dead=(5,)):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((n_in, n_in)) / np.sqrt(n_in) + np.eye(n_in)
    X = rng.standard_normal((tokens, n_in)) @ mixing  # correlated features
    X[:, 3] *= 8.0  # an outlier feature
    X[:, list(dead)] = 0.0  # inputs that never fire
    W = rng.standard_normal((n_out, n_in))
    return X, W


@pytest.mark.parametrize("setting", [
    dict(sparsity=0.5, blocksize=32), dict(sparsity=0.7, blocksize=40),
    dict(pattern="2:4", blocksize=32), dict(pattern="4:8", blocksize=16),
])
def test_matches_float64_numpy_reference(setting):
    X, W = correlated_layer(0)
    H = X.T @ X
    pattern = parse_pattern(setting["pattern"]) if "pattern" in setting else None
    n, m = (pattern.n, pattern.m) if pattern else (0, 0)
    want_W, want_keep = sparsegpt_numpy(W, H, setting.get("sparsity"), n, m,
                                        setting["blocksize"])
    with jax.enable_x64(True):
        got_kernel, got_keep, ok = sparsegpt_prune_layer(
            jnp.asarray(W.T), jnp.asarray(H), sparsity=setting.get("sparsity"), pattern=pattern,
            blocksize=setting["blocksize"])
        got_kernel = np.asarray(got_kernel)
    assert ok
    np.testing.assert_array_equal(np.asarray(got_keep).T, want_keep)
    np.testing.assert_allclose(got_kernel.T, want_W, rtol=0, atol=1e-5)
    assert np.all(got_kernel.T[~want_keep] == 0)
    assert np.all(got_kernel.T[:, 5] == 0)  # the dead input


def test_float32_agrees_with_float64():
    X, W = correlated_layer(1)
    H = X.T @ X
    kernel, keep, ok = sparsegpt_prune_layer(jnp.asarray(W.T, jnp.float32),
                                             jnp.asarray(H, jnp.float32), sparsity=0.5)
    want_W, want_keep = sparsegpt_numpy(W, H, 0.5)
    assert ok
    assert np.mean(want_keep == np.asarray(keep).T) > 0.99
    X_out = X @ want_W.T
    assert np.linalg.norm(X @ np.asarray(kernel, np.float64) - X_out) < 1e-3 * np.linalg.norm(X_out)


def reconstruction_error(X, W, W_new):
    return np.linalg.norm(X @ W.T - X @ W_new.T)


def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude():
    X, W = correlated_layer(2, dead=())
    H = X.T @ X
    norms = np.sqrt(np.diag(H))

    def prune_rows(scores):  # per output row, 50%, the Wanda comparison group
        W_new = W.copy()
        for r in range(W.shape[0]):
            W_new[r, np.argsort(scores[r], kind="stable")[: W.shape[1] // 2]] = 0
        return W_new

    magnitude = reconstruction_error(X, W, prune_rows(np.abs(W)))
    wanda = reconstruction_error(X, W, prune_rows(np.abs(W) * norms[None, :]))
    kernel, _, _ = sparsegpt_prune_layer(jnp.asarray(W.T, jnp.float32),
                                         jnp.asarray(H, jnp.float32), sparsity=0.5)
    sparsegpt = reconstruction_error(X, W, np.asarray(kernel, np.float64).T)
    assert sparsegpt < wanda < magnitude


@pytest.mark.parametrize("kwargs, message", [
    (dict(blocksize=0, damp=0.01, pattern=None), "blocksize must be a positive integer"),
    (dict(blocksize=30, damp=0.01, pattern=parse_pattern("2:4")), "multiple of M=4"),
    (dict(blocksize=128, damp=0.0, pattern=None), r"damp must be in \(0, 1\]"),
    (dict(blocksize=128, damp=2.0, pattern=None), r"damp must be in \(0, 1\]"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_sparsegpt_settings(**kwargs)
