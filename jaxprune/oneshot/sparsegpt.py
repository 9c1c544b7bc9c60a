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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import qwix
from absl import logging
from jax import lax

from jaxprune import selection
from jaxprune.criteria import check_statistic_shape
from jaxprune.patterns import Pattern
from jaxprune.quant.spec import QuantSpec, fake_quantize, group_scale_zero, quantize_codes


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


def _refresh_group_params(weights, scales, zeros, start, stop, quant):
    """Scales and zero points of the scale groups that start in columns ``[start, stop)``,
    from the weights as they stand at the block's start (as in GPTQ's code)."""
    group = weights.shape[1] // scales.shape[1]
    for first in range(-(-start // group) * group, stop, group):
        scale, zero = group_scale_zero(weights[:, first:first + group], quant)
        scales = scales.at[:, first // group].set(scale)
        zeros = zeros.at[:, first // group].set(zero)
    return scales, zeros


def _sweep_block(block, block_keep, factor, col_scale, col_zero, *, n, m, quant):
    """Processes one block column by column; returns ``(block, block_keep, errors)``.

    ``col_scale``/``col_zero`` hold each column's quantization parameters (``quant`` None:
    unused). For N:M the mask of each group of ``m`` columns is chosen at its first column
    from the weights as updated so far.
    """
    rows, count = block.shape
    diag = jnp.diag(factor)

    def column(i, carry):
        block, block_keep, errors = carry
        if m:
            group_start = (i // m) * m
            group = lax.dynamic_slice(block, (0, group_start), (rows, m))
            group_diag = lax.dynamic_slice(diag, (group_start,), (m,))
            group_keep = _nm_group_keep(group, group_diag, n)
            updated = lax.dynamic_update_slice(block_keep, group_keep, (0, group_start))
            block_keep = jnp.where(i % m == 0, updated, block_keep)
        w = block[:, i]
        if quant is not None:
            w_kept = fake_quantize(w, col_scale[:, i], col_zero[:, i], quant)
        else:
            w_kept = w
        q = jnp.where(block_keep[:, i], w_kept, 0.0)
        error = (w - q) / diag[i]
        # Row i of the upper factor is zero left of the diagonal: earlier columns keep
        # their values, column i becomes q exactly.
        block = block - error[:, None] * factor[i][None, :]
        block = block.at[:, i].set(q)
        errors = errors.at[:, i].set(error)
        return block, block_keep, errors

    return lax.fori_loop(0, count, column,
                         (block, block_keep, jnp.zeros((rows, count), block.dtype)))


def _initial_block_keep(block, diag, fixed_keep, *, sparsity, m):
    """The block's mask before its columns are swept: the given one, the lowest saliencies
    ``w^2 / d^2`` of the block pruned (unstructured), or all kept (N:M chooses per group)."""
    if fixed_keep is not None:
        return fixed_keep
    if m:
        return jnp.ones(block.shape, bool)
    return selection.select_per_tensor(block**2 / diag[None, :] ** 2, sparsity)


@functools.partial(jax.jit, static_argnames=("sparsity", "n", "m", "blocksize", "quant"))
def _sparsegpt_rows(weights, gram, damp, fixed_keep, *, sparsity, n, m, blocksize, quant):
    """The column sweep on ``weights [rows, cols]``.

    Returns:
      ``(new_weights, keep_mask, scales, zeros, factor_ok)``: ``scales``/``zeros`` are
      ``[rows, groups]`` (ones and zeros without ``quant``).
    """
    rows, cols = weights.shape
    upper, dead = _inverse_hessian_factor(gram, damp)
    factor_ok = jnp.all(jnp.isfinite(upper))
    weights = jnp.where(dead[None, :], 0.0, weights)
    groups = cols // quant.group_of(cols) if quant is not None else 1
    scales = jnp.ones((rows, groups), weights.dtype)
    zeros = jnp.zeros((rows, groups), weights.dtype)
    keep = jnp.ones((rows, cols), bool)
    for start in range(0, cols, blocksize):
        stop = min(start + blocksize, cols)
        factor = upper[start:stop, start:stop]
        if quant is not None:
            scales, zeros = _refresh_group_params(weights, scales, zeros, start, stop, quant)
        columns = jnp.arange(start, stop) // (cols // groups)
        block_keep = _initial_block_keep(
            weights[:, start:stop], jnp.diag(factor),
            None if fixed_keep is None else fixed_keep[:, start:stop], sparsity=sparsity, m=m)
        block, block_keep, errors = _sweep_block(
            weights[:, start:stop], block_keep, factor, scales[:, columns], zeros[:, columns],
            n=n, m=m, quant=quant)
        weights = weights.at[:, start:stop].set(block)
        keep = keep.at[:, start:stop].set(block_keep)
        if stop < cols:
            weights = weights.at[:, stop:].add(-errors @ upper[start:stop, stop:])
    return weights, keep, scales, zeros, factor_ok


class SweepResult(NamedTuple):
    """One layer after the column sweep.

    Attributes:
      kernel: the new ``[in, out]`` kernel: pruned entries exactly zero, kept ones updated
        (and, when quantizing, on the quantization grid: ``dequantize(quantized)``).
      keep: the ``[in, out]`` mask, ``True`` kept.
      quantized: the kernel as a ``qwix.QArray`` (codes ``[in, out]``, scales and zero points
        ``[groups, out]``), or ``None`` without quantization.
      factor_ok: whether the Cholesky factorisations succeeded (if not, the kernel holds NaN;
        raise ``damp``).
    """

    kernel: jax.Array
    keep: jax.Array
    quantized: Any
    factor_ok: bool


def _as_qarray(weights, scales, zeros, quant: QuantSpec):
    """The swept ``weights [rows, cols]`` as a ``qwix.QArray`` over the ``[in, out]`` kernel."""
    group = weights.shape[1] // scales.shape[1]
    codes = quantize_codes(weights, jnp.repeat(scales, group, axis=1),
                           jnp.repeat(zeros, group, axis=1), quant)
    zero_point = None if quant.symmetric else zeros.T.astype(quant.qtype)
    return qwix.QArray(codes.T.astype(quant.qtype), scales.T, zero_point, quant.qtype)


def sparsegpt_sweep(
    kernel: jax.Array,
    gram: jax.Array,
    *,
    sparsity: float | None = None,
    pattern: Pattern | None = None,
    keep: jax.Array | None = None,
    quant: QuantSpec | None = None,
    blocksize: int = 128,
    damp: float = 0.01,
) -> SweepResult:
    """SparseGPT's column sweep on one linear layer: prune, quantize, or both at once.

    Each column in turn is pruned (and its kept weights rounded to the quantization grid), and
    the error is compensated on the columns not processed yet. With a mask chosen it is
    SparseGPT; with ``keep`` given and ``quant`` set it is GPTQ (all kept: GPTQ proper; the
    mask of a pruned layer: GPTQ that keeps its zeros); with both chosen mask and ``quant`` it
    is SparseGPT's joint sparsification and quantization. Jitted: one compilation per shape
    and setting.

    Args:
      kernel: Flax kernel ``[in, out]``.
      gram: ``X^T X`` of the layer's inputs ``[in, in]`` (any positive scale). The solve runs
        in float32, or float64 when the kernel is float64.
      sparsity: fraction of each block's entries to prune (unstructured).
      pattern: an N:M ``Pattern`` (groups along the input axis).
      keep: a fixed ``[in, out]`` mask to keep instead of choosing one.
      quant: round kept weights to this grid (scales per group, found at the group's first
        column from the weights as updated so far, as in GPTQ's code); ``None``: no rounding.
      blocksize: columns per lazy-update block; a multiple of M for N:M.
      damp: dampening added to the diagonal, as a fraction of its mean.

    Returns:
      A ``SweepResult``.

    References:
      Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
      One-Shot", Algorithm 1 and its joint quantization; Frantar et al. 2023, "GPTQ: Accurate
      Post-Training Quantization for Generative Pre-trained Transformers", Algorithm 1.

    Raises:
      ValueError: for a kernel that is not 2-D, a ``gram`` that is not ``[in, in]``, a ``keep``
        of another shape, or not exactly one of ``sparsity``, ``pattern`` and ``keep``.
    """
    check_statistic_shape("gram", kernel, gram, ("in,in",))
    if sum(x is not None for x in (sparsity, pattern, keep)) != 1:
        raise ValueError("give exactly one of sparsity (unstructured), pattern (N:M) and keep "
                         "(a fixed mask)")
    if keep is not None and keep.shape != kernel.shape:
        raise ValueError(f"keep has shape {keep.shape}; the kernel's is {kernel.shape}")
    if quant is not None:
        quant.check_layer(kernel.shape[0])
    n, m = (pattern.n, pattern.m) if pattern is not None else (0, 0)
    # float32 at least (bfloat16 kernels are solved in float32); float64 stays float64.
    dtype = jnp.promote_types(kernel.dtype, jnp.float32)
    weights, mask, scales, zeros, ok = _sparsegpt_rows(
        kernel.T.astype(dtype), gram.astype(dtype), jnp.asarray(damp, dtype),
        None if keep is None else keep.T.astype(bool),
        sparsity=None if sparsity is None else float(sparsity), n=n, m=m,
        blocksize=blocksize, quant=quant)
    quantized = None if quant is None else _as_qarray(weights, scales, zeros, quant)
    return SweepResult(weights.T.astype(kernel.dtype), mask.T, quantized, bool(ok))


def sparsegpt_prune_layer(
    kernel: jax.Array,
    gram: jax.Array,
    *,
    sparsity: float | None = None,
    pattern: Pattern | None = None,
    blocksize: int = 128,
    damp: float = 0.01,
) -> tuple[jax.Array, jax.Array, bool]:
    """Prunes one linear layer with SparseGPT (``sparsegpt_sweep`` without quantization).

    Args:
      kernel: Flax kernel ``[in, out]``.
      gram: ``X^T X`` of the layer's inputs ``[in, in]``.
      sparsity: fraction of each block's entries to prune (unstructured); ``None`` for N:M.
      pattern: an N:M ``Pattern`` (groups along the input axis), or ``None`` for unstructured.
      blocksize: columns per lazy-update block; a multiple of M for N:M.
      damp: dampening added to the diagonal, as a fraction of its mean.

    Returns:
      ``(new_kernel, keep_mask, factor_ok)`` (see ``SweepResult``).

    References:
      Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
      One-Shot", Algorithm 1.

    Raises:
      ValueError: for a kernel that is not 2-D or a ``gram`` that is not ``[in, in]``.
    """
    result = sparsegpt_sweep(kernel, gram, sparsity=None if pattern is not None else sparsity,
                             pattern=pattern, blocksize=blocksize, damp=damp)
    return result.kernel, result.keep, result.factor_ok


def sweep_with_retry(kernel: jax.Array, gram: jax.Array, *, name: str, damp: float = 0.01,
                     max_damp: float = 10.0, **settings) -> tuple[SweepResult, float]:
    """``sparsegpt_sweep`` that raises the dampening tenfold while Cholesky fails.

    Args:
      kernel, gram, damp: as for ``sparsegpt_sweep``.
      name: the layer, for errors and warnings.
      max_damp: the largest dampening tried.
      **settings: the other arguments of ``sparsegpt_sweep``.

    Returns:
      ``(result, damp_used)``.

    Raises:
      FloatingPointError: naming the layer, when even ``max_damp`` fails or the result holds
        NaN or Inf.
    """
    current = damp
    while True:
        result = sparsegpt_sweep(kernel, gram, damp=current, **settings)
        if result.factor_ok:
            break
        if current * 10 > max_damp:
            raise FloatingPointError(
                f"the column sweep on {name}: the Hessian is not positive definite even with "
                f"dampening {current:g} of its mean diagonal")
        logging.warning("the column sweep on %s: Cholesky failed with damp=%g; retrying with "
                        "%g", name, current, current * 10)
        current *= 10
    if not bool(jnp.all(jnp.isfinite(result.kernel))):
        raise FloatingPointError(f"the column sweep on {name} produced NaN or Inf weights")
    return result, current


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
    """SparseGPT pruning (``sweep_with_retry`` without quantization).

    Returns:
      ``(new_kernel, keep_mask, damp_used)``.

    Raises:
      FloatingPointError: naming the layer, when even ``max_damp`` fails or the result holds
        NaN or Inf.
    """
    result, used = sweep_with_retry(
        kernel, gram, name=name, damp=damp, max_damp=max_damp,
        sparsity=None if pattern is not None else sparsity, pattern=pattern, blocksize=blocksize)
    return result.kernel, result.keep, used


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
