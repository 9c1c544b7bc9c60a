"""SparseGPT: one-shot pruning with layer-wise reconstruction (Frantar & Alistarh 2023).

For a linear layer with weights ``W`` (rows = outputs, columns = inputs) and the Hessian of the
layer-wise squared error ``H = X^T X``, the columns are processed left to right. Pruning a
weight ``w_rj`` is compensated by updating the not yet processed columns of row ``r`` along
the ``j``-th row of the upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``):
``W[r, j:] -= (w_rj - q_rj) / U_jj * U[j, j:]``. Masks are chosen with the saliency
``w^2 / U_jj^2``: once per block of ``blocksize`` columns (unstructured: the lowest fraction of
the block's entries), or per group of M columns (N:M: the M - N lowest of each row's group).
The updates inside a block are applied column by column; the block's accumulated error reaches
the later columns in one matrix product ("lazy batch updates").

Flax kernels are ``[in, out]``; this module transposes to the paper's orientation and back.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from absl import logging
from jax import lax

from jaxprune import selection
from jaxprune.criteria import check_statistic_shape
from jaxprune.patterns import Pattern


def _inverse_hessian_factor(gram: jax.Array, damp: float) -> tuple[jax.Array, jax.Array]:
    """Upper Cholesky factor of the damped inverse Hessian, and the dead-input flags."""
    dim = gram.shape[0]
    diagonal = jnp.diag(gram)
    dead = diagonal == 0
    # A dead input (never non-zero in the calibration data) gets a unit diagonal so that H
    # stays invertible; its weights are zeroed, as they cannot affect the output.
    hessian = gram.at[jnp.arange(dim), jnp.arange(dim)].set(jnp.where(dead, 1.0, diagonal))
    hessian = hessian + damp * jnp.mean(jnp.diag(hessian)) * jnp.eye(dim, dtype=gram.dtype)
    lower = jnp.linalg.cholesky(hessian)
    inverse = jax.scipy.linalg.cho_solve((lower, True), jnp.eye(dim, dtype=gram.dtype))
    upper = jnp.linalg.cholesky(inverse).T
    return upper, dead


def _nm_group_keep(block: jax.Array, diag: jax.Array, n: int) -> jax.Array:
    """Keeps the n largest of ``w^2 / d^2`` in each row of an ``[rows, m]`` group."""
    saliency = block**2 / diag[None, :] ** 2
    return block.shape[1] - n <= selection.ranks_in_small_groups(saliency.T).T


@functools.partial(jax.jit, static_argnames=("sparsity", "n", "m", "blocksize"))
def _sparsegpt_rows(weights, gram, damp, *, sparsity, n, m, blocksize):
    """The algorithm on ``weights [rows, cols]``; returns ``(pruned, keep_mask, factor_ok)``."""
    rows, cols = weights.shape
    upper, dead = _inverse_hessian_factor(gram, damp)
    factor_ok = jnp.all(jnp.isfinite(upper))
    weights = jnp.where(dead[None, :], 0.0, weights)
    keep = jnp.ones((rows, cols), bool)
    for start in range(0, cols, blocksize):
        stop = min(start + blocksize, cols)
        count = stop - start
        block = weights[:, start:stop]
        factor = upper[start:stop, start:stop]
        diag = jnp.diag(factor)
        if m == 0:
            block_keep = selection.select_per_tensor(block**2 / diag[None, :] ** 2, sparsity)
        else:
            block_keep = jnp.ones((rows, count), bool)

        def column(i, carry, factor=factor, diag=diag):
            block, block_keep, errors = carry
            if m:
                # At the first column of each group of m, choose the group's mask from the
                # weights as updated so far.
                group_start = (i // m) * m
                group = lax.dynamic_slice(block, (0, group_start), (rows, m))
                group_diag = lax.dynamic_slice(diag, (group_start,), (m,))
                group_keep = _nm_group_keep(group, group_diag, n)
                updated = lax.dynamic_update_slice(block_keep, group_keep, (0, group_start))
                block_keep = jnp.where(i % m == 0, updated, block_keep)
            w = block[:, i]
            q = jnp.where(block_keep[:, i], w, 0.0)
            error = (w - q) / diag[i]
            # Row i of the upper factor is zero left of the diagonal: earlier columns keep
            # their values, column i becomes q exactly.
            block = block - error[:, None] * factor[i][None, :]
            block = block.at[:, i].set(q)
            errors = errors.at[:, i].set(error)
            return block, block_keep, errors

        block, block_keep, errors = lax.fori_loop(
            0, count, column, (block, block_keep, jnp.zeros((rows, count), weights.dtype))
        )
        weights = weights.at[:, start:stop].set(block)
        keep = keep.at[:, start:stop].set(block_keep)
        if stop < cols:
            weights = weights.at[:, stop:].add(-errors @ upper[start:stop, stop:])
    return weights, keep, factor_ok


def sparsegpt_prune_layer(
    kernel: jax.Array,
    gram: jax.Array,
    *,
    sparsity: float | None = None,
    pattern: Pattern | None = None,
    blocksize: int = 128,
    damp: float = 0.01,
) -> tuple[jax.Array, jax.Array, bool]:
    """Prunes one linear layer with SparseGPT (jitted; one compilation per shape and setting).

    Args:
      kernel: Flax kernel ``[in, out]``.
      gram: ``X^T X`` of the layer's inputs ``[in, in]`` (any positive scale). The solve runs
        in float32, or float64 when the kernel is float64.
      sparsity: fraction of each block's entries to prune (unstructured); ``None`` for N:M.
      pattern: an N:M ``Pattern`` (groups along the input axis), or ``None`` for unstructured.
      blocksize: columns per lazy-update block; a multiple of M for N:M.
      damp: dampening added to the diagonal, as a fraction of its mean.

    Returns:
      ``(new_kernel, keep_mask, factor_ok)``: the updated kernel with pruned entries exactly
      zero, the ``[in, out]`` mask (``True`` kept), and whether the Cholesky factorisations
      succeeded (if not, the kernel holds NaN; raise ``damp``).

    References:
      Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
      One-Shot", Algorithm 1.

    Raises:
      ValueError: for a kernel that is not 2-D or a ``gram`` that is not ``[in, in]``.
    """
    check_statistic_shape("gram", kernel, gram, ("in,in",))
    n, m = (pattern.n, pattern.m) if pattern is not None else (0, 0)
    # float32 at least (bfloat16 kernels are solved in float32); float64 stays float64.
    dtype = jnp.promote_types(kernel.dtype, jnp.float32)
    new_weights, keep, ok = _sparsegpt_rows(
        kernel.T.astype(dtype), gram.astype(dtype), jnp.asarray(damp, dtype),
        sparsity=None if m else float(sparsity), n=n, m=m, blocksize=blocksize)
    return new_weights.T.astype(kernel.dtype), keep.T, bool(ok)


def sparsegpt_with_retry(
    kernel: jax.Array,
    gram: jax.Array,
    *,
    name: str,
    sparsity: float | None = None,
    pattern: Pattern | None = None,
    blocksize: int = 128,
    damp: float = 0.01,
    max_damp: float = 10.0,
) -> tuple[jax.Array, jax.Array, float]:
    """``sparsegpt_prune_layer`` that raises the dampening tenfold while Cholesky fails.

    Returns:
      ``(new_kernel, keep_mask, damp_used)``.

    Raises:
      FloatingPointError: naming the layer, when even ``max_damp`` fails or the result holds
        NaN or Inf.
    """
    current = damp
    while True:
        new_kernel, keep, ok = sparsegpt_prune_layer(
            kernel, gram, sparsity=sparsity, pattern=pattern, blocksize=blocksize, damp=current)
        if ok:
            break
        if current * 10 > max_damp:
            raise FloatingPointError(
                f"SparseGPT on {name}: the Hessian is not positive definite even with "
                f"dampening {current:g} of its mean diagonal")
        logging.warning("SparseGPT on %s: Cholesky failed with damp=%g; retrying with %g",
                        name, current, current * 10)
        current *= 10
    if not bool(jnp.all(jnp.isfinite(new_kernel))):
        raise FloatingPointError(f"SparseGPT on {name} produced NaN or Inf weights")
    return new_kernel, keep, current


def check_sparsegpt_settings(blocksize: int, damp: float, pattern: Pattern | None) -> None:
    """Validates SparseGPT settings before any work.

    Raises:
      ValueError: naming the setting and what is allowed.
    """
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")
    if pattern is not None and blocksize % pattern.m:
        raise ValueError(f"blocksize must be a multiple of M={pattern.m} for pattern {pattern}, "
                         f"got {blocksize}")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not (
            0 < damp <= 1 and math.isfinite(damp)):
        raise ValueError(f"damp must be in (0, 1] (a fraction of the mean Hessian diagonal), "
                         f"got {damp!r}")
