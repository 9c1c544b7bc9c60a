"""ALPS: the layer-wise pruning problem solved by ADMM, then a conjugate-gradient refit
(Meng et al., NeurIPS 2024).

For a kernel ``W`` ``[in, out]`` and the inputs' Gram matrix ``H = X^T X`` (damped by a fraction
of its mean diagonal), ALPS minimises ``||X W_hat - X W||^2`` over kernels ``W_hat`` with the
sparsity pattern's support. The inputs are first scaled to unit norm (``H`` to a unit diagonal,
``W`` rows times the input norms): the diagonal preconditioning under which the paper's
conjugate gradients run. ADMM splits ``W_hat`` into a free copy ``B`` and a sparse copy ``D``
with the dual ``V`` and the penalty ``rho``:

* ``B = (H + rho I)^-1 (H W - V + rho D)`` (one eigendecomposition of ``H``, reused for every
  ``rho``);
* ``D`` = the projection of ``B + V / rho`` on the pattern (the largest magnitudes kept);
* ``V += rho (B - D)``.

Every 3 iterations the penalty follows the paper's schedule from the change ``s`` of ``D``'s
support since the last check (``k`` weights kept): ``rho *= 1.3`` if ``s > 0.1 k``, ``1.2`` if
``s > 0.005 k``, ``1.1`` if any weight moved (after ``rho`` first grew; before, ``rho /= 5`` and
the iterates restart, as a too-large initial penalty freezes the support); a support that
stopped moving ends the search once ``rho`` has grown, and after 30 iterations so does one
moving less than ``0.0003 k``; ``rho`` is capped at 1e6. The final support is the projection
of ``B``, on which a fixed number of conjugate-gradient steps refit the kept weights (the
paper's code asks for a relative residual of 1e-4 on the unrestricted system, which a sparse
support never reaches, so it always runs its 10 steps; this does the same).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxprune import selection
from jaxprune._checks import check_int, check_real
from jaxprune.criteria import check_statistic_shape
from jaxprune.oneshot.methods import GRAM, LayerPruning
from jaxprune.patterns import GLOBAL, Pattern

# The schedule of the paper's code: checks every 3 iterations, the support-change fractions
# that raise rho by 1.3 and 1.2, the fraction that ends the search after 30 iterations, the cap.
_CHECK_EVERY = 3
_GROW_FAST, _GROW_SLOW, _SETTLED = 0.1, 0.005, 0.0003
_MIN_ITERS = 30
_MAX_RHO = 1e6


class _Admm(NamedTuple):
    """ADMM's iterates and the penalty schedule's state."""

    b: jax.Array
    d: jax.Array
    v: jax.Array
    rho: jax.Array
    grown: jax.Array
    support: jax.Array
    iteration: jax.Array
    done: jax.Array


def _project(z, sparsity, pattern):
    """The pattern's support of the largest magnitudes of ``z``, and ``z`` on it."""
    keep = selection.select_masks({"w": z * z}, sparsity, pattern)["w"]
    return jnp.where(keep, z, 0.0), keep


def _schedule(s: _Admm, support, b0, d0, kept: int) -> _Admm:
    """The penalty schedule's check (module docstring): a new ``rho``, a restart, or the end."""
    moved = jnp.sum(support != s.support).astype(jnp.float32)
    fast, slow = moved > _GROW_FAST * kept, moved > _GROW_SLOW * kept
    slow &= ~fast
    some = ~fast & ~slow & (moved > 0)
    still = ~fast & ~slow & ~some
    rho = jnp.where(fast, s.rho * 1.3, jnp.where(slow, s.rho * 1.2, jnp.where(
        some & s.grown, s.rho * 1.1, jnp.where(s.grown & still, s.rho, s.rho / 5))))
    restart = some & ~s.grown
    done = (still & s.grown) | ((s.iteration >= _MIN_ITERS) & (moved < _SETTLED * kept))
    return _Admm(jnp.where(restart, b0, s.b), jnp.where(restart, d0, s.d),
                 jnp.where(restart, 0.0, s.v), jnp.minimum(rho, _MAX_RHO),
                 s.grown | fast | slow, support, s.iteration, done)


def _admm_step(s: _Admm, eigvals, eigvecs, rhs, b0, d0, sparsity, pattern, kept) -> _Admm:
    """One ADMM iteration, and the schedule's check every third."""
    b = eigvecs @ ((eigvecs.T @ (rhs - s.v + s.rho * s.d)) / (eigvals + s.rho)[:, None])
    d, support = _project(b + s.v / s.rho, sparsity, pattern)
    v = s.v + s.rho * (b - d)
    s = s._replace(b=b, d=d, v=v)
    checked = _schedule(s, support, b0, d0, kept)
    is_check = (s.iteration + 1) % _CHECK_EVERY == 0
    s = jax.tree.map(lambda new, old: jnp.where(is_check, new, old), checked, s)
    return s._replace(iteration=s.iteration + 1)


def _refit(hessian, rhs, x, support, steps: int):
    """Conjugate gradients on ``hessian x = rhs`` restricted to ``support``, each output column
    its own system, from ``x``."""
    def guarded(value):
        return jnp.where(value == 0, 1e-8, value)

    residual = (rhs - hessian @ x) * support
    direction, rz = residual, jnp.sum(residual * residual, axis=0)
    for _ in range(steps):
        curved = hessian @ direction
        alpha = rz / guarded(jnp.sum(direction * curved, axis=0))
        x = x + alpha * direction
        residual = (residual - alpha * curved) * support
        rz_next = jnp.sum(residual * residual, axis=0)
        direction = residual + (rz_next / guarded(rz)) * direction
        rz = rz_next
    return x


def _normalised_problem(kernel, gram, damp):
    """The damped Gram matrix scaled to a unit diagonal, the scaled kernel, and the scales."""
    dim = gram.shape[0]
    hessian = gram + damp * jnp.mean(jnp.diag(gram)) * jnp.eye(dim, dtype=jnp.float32)
    scale = jnp.sqrt(jnp.diag(hessian)) + 1e-8
    return hessian / scale[:, None] / scale[None, :], kernel * scale[:, None], scale


@functools.partial(jax.jit, static_argnames=("sparsity", "pattern", "max_iters", "cg_steps"))
def alps_prune_layer(kernel: jax.Array, gram: jax.Array, *, sparsity: float, pattern: Pattern,
                     rho: float = 0.1, max_iters: int = 300, cg_steps: int = 10,
                     damp: float = 0.01) -> tuple[jax.Array, jax.Array, dict]:
    """ALPS on one kernel (module docstring).

    Args:
      kernel: ``[in, out]``.
      gram: ``sum_t x_t x_t^T`` of the layer's calibration inputs ``[in, in]``.
      sparsity: the fraction pruned (``1 - N/M`` for N:M).
      pattern: per-tensor, per-output or N:M groups of the projection.
      rho: the initial penalty.
      max_iters: the most ADMM iterations.
      cg_steps: conjugate-gradient steps of the refit.
      damp: added to ``H``'s diagonal, a fraction of its mean.

    Returns:
      ``(pruned kernel, kept mask, report)`` with the ADMM iterations run and the final rho.

    References:
      Meng, Behdin, Wang & Mazumder 2024, "ALPS: Improved Optimization for Highly Sparse
      One-Shot Pruning for Large Language Models" (NeurIPS 2024), Algorithms 1 and 2.
    """
    hessian, b0, scale = _normalised_problem(kernel.astype(jnp.float32),
                                             gram.astype(jnp.float32), damp)
    eigvals, eigvecs = jnp.linalg.eigh(hessian)
    rhs = hessian @ b0
    d0, support0 = _project(b0, sparsity, pattern)
    kept = kernel.size - selection.num_pruned(sparsity, kernel.size)
    state = _Admm(b0, d0, jnp.zeros_like(b0), jnp.asarray(rho, jnp.float32), jnp.asarray(False),
                  support0, jnp.asarray(0), jnp.asarray(False))
    state = lax.while_loop(
        lambda s: ~s.done & (s.iteration < max_iters),
        lambda s: _admm_step(s, eigvals, eigvecs, rhs, b0, d0, sparsity, pattern, kept), state)
    b, keep = _project(state.b, sparsity, pattern)
    b = _refit(hessian, rhs, b, keep.astype(jnp.float32), cg_steps)
    new_kernel = jnp.where(keep, b / scale[:, None], 0.0).astype(kernel.dtype)
    return new_kernel, keep, {"alps_iters": state.iteration, "alps_rho": state.rho}


@dataclasses.dataclass(frozen=True)
class ALPS:
    """ALPS as a one-shot method (``alps_prune_layer``).

    Attributes:
      rho: the initial ADMM penalty (0.1 in the paper's code).
      iters: the most ADMM iterations (300 there).
      cg_steps: conjugate-gradient steps refitting the final support (10 there).
      damp: the fraction of the Gram matrix's mean diagonal added to it (0.01 there).

    Raises:
      TypeError, ValueError: for a setting out of range, naming its config field.

    References:
      Meng et al. 2024, "ALPS: Improved Optimization for Highly Sparse One-Shot Pruning for
      Large Language Models" (NeurIPS 2024).
    """

    rho: float = 0.1
    iters: int = 300
    cg_steps: int = 10
    damp: float = 0.01
    statistic = GRAM
    name = "alps"

    def __post_init__(self):
        check_real("alps_rho", self.rho, minimum=0, strict=True)
        check_int("alps_iters", self.iters, minimum=1)
        check_int("alps_cg_steps", self.cg_steps, minimum=0)
        check_real("alps_damp", self.damp, minimum=0, strict=True)

    def check(self, pattern: Pattern) -> None:
        """Raises ``ValueError`` for global selection (ALPS solves one layer at a time)."""
        if pattern.kind == GLOBAL:
            raise ValueError("method 'alps' solves each layer on its own; pattern 'global' is "
                             "not supported")

    def prune_layer(self, kernel, statistic, *, sparsity, pattern, path) -> LayerPruning:
        """Prunes and refits one kernel from its inputs' Gram matrix.

        Raises:
          FloatingPointError: when the solve produces NaN or Inf.
        """
        check_statistic_shape("gram", kernel, jnp.diag(statistic.gram))
        new_kernel, keep, report = alps_prune_layer(
            kernel, statistic.gram, sparsity=float(sparsity), pattern=pattern, rho=self.rho,
            max_iters=self.iters, cg_steps=self.cg_steps, damp=self.damp)
        if not bool(jnp.all(jnp.isfinite(new_kernel))):
            raise FloatingPointError(f"ALPS on {path!r} produced NaN or Inf (its Gram matrix "
                                     f"may hold them); no kernel was written")
        return LayerPruning(new_kernel, keep, {"alps_iters": int(report["alps_iters"]),
                                               "alps_rho": float(report["alps_rho"])})


def alps_method(alps_rho: float = 0.1, alps_iters: int = 300, alps_cg_steps: int = 10,
                alps_damp: float = 0.01) -> ALPS:
    """The config boundary's ALPS (its fields named ``alps_*``).

    Returns:
      ``ALPS(alps_rho, alps_iters, alps_cg_steps, alps_damp)``.

    Raises:
      TypeError, ValueError: for a setting out of range.
    """
    return ALPS(alps_rho, alps_iters, alps_cg_steps, alps_damp)
