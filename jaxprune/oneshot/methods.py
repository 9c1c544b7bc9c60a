"""One-shot methods as values: what a method needs, and how it prunes one kernel.

A method is any object with three members (the ``OneShotMethod`` protocol):

* ``statistic``: what the engine must collect before the method sees a kernel: ``None``
  (nothing: the kernels are pruned all at once, without calibration), ``INPUT_NORMS`` or
  ``GRAM`` (sums over the calibration tokens of each layer's inputs, gathered block by block:
  ``InputStats``), or a ``ModelStatistic`` (one pass over the whole model before the blocks,
  giving an array per kernel: the empirical Fisher diagonal, or a caller's own);
* ``check(pattern)``: refuses a comparison group the method does not support, before any work;
* ``prune_layer(kernel, statistic, *, sparsity, pattern, path)``: the new kernel, its kept mask
  and a dict of extra report fields.

``ScoreMethod(score_fn)`` covers every method that scores the weights and keeps the best of
each comparison group (magnitude, OBD, Wanda, RIA, a user's criterion); ``SparseGPT`` solves
its own layer-wise reconstruction. The engine (``jaxprune.oneshot.engine``) has no branch per
method; the names used by configs live in ``jaxprune.oneshot.registry``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jaxprune import criteria, selection
from jaxprune.oneshot import sparsegpt
from jaxprune.oneshot.fisher import empirical_fisher_diagonal
from jaxprune.patterns import GLOBAL, PER_OUTPUT, Pattern
from jaxprune.quant.spec import QuantSpec


@dataclasses.dataclass(frozen=True)
class InputStatistic:
    """Sums over the calibration tokens of each linear layer's inputs (``InputStats``).

    Attributes:
      with_gram: collect the Gram matrix ``X^T X`` as well as the squared norms.
    """

    with_gram: bool


INPUT_NORMS = InputStatistic(with_gram=False)
GRAM = InputStatistic(with_gram=True)


@dataclasses.dataclass(frozen=True)
class ModelStatistic:
    """A statistic computed once from the dense model and the calibration segments.

    Attributes:
      compute: ``(model, segments [N, L], paths: set[str], progress: bool) -> {path: array}``
        with one array per pruned kernel (the kernel's shape, or its input size).
      name: shown in errors and reports.
    """

    compute: Callable[..., dict[str, jax.Array]]
    name: str


FISHER = ModelStatistic(empirical_fisher_diagonal, "empirical Fisher diagonal")
Statistic = InputStatistic | ModelStatistic | None


class LayerPruning(NamedTuple):
    """What a method returns for one kernel: the new kernel, the kept mask, report fields,
    and (for a method that quantizes as it prunes) the kernel as a ``qwix.QArray``."""

    kernel: jax.Array
    keep: jax.Array
    info: dict
    quantized: Any = None


@runtime_checkable
class OneShotMethod(Protocol):
    """The protocol the one-shot engine drives; see the module docstring."""

    statistic: Statistic

    def check(self, pattern: Pattern) -> None:
        """Raises ``ValueError`` for a pattern the method does not support."""

    def prune_layer(self, kernel: jax.Array, statistic: Any, *, sparsity: float,
                    pattern: Pattern, path: str) -> LayerPruning:
        """Prunes one kernel ``[in, out]`` to ``sparsity`` within ``pattern``'s groups."""


@functools.partial(jax.jit, static_argnames=("score_fn", "sparsity", "pattern"))
def _select_by_scores(kernel, statistic, *, score_fn, sparsity, pattern):
    """Scores one kernel, keeps the best of each comparison group, zeroes the rest.

    Returns:
      ``(pruned kernel, kept mask, whether every score was finite)``.

    Raises:
      ValueError: for scores of another shape than the kernel's (found while tracing, so once
        per kernel shape rather than per call).
    """
    layer_scores = score_fn(kernel, statistic)
    if layer_scores.shape != kernel.shape:
        raise ValueError(f"score_fn returned scores of shape {layer_scores.shape} for a kernel "
                         f"of shape {kernel.shape}; they must match")
    keep = selection.select_masks({"w": layer_scores}, sparsity, pattern)["w"]
    finite = jnp.all(jnp.isfinite(layer_scores))
    return jnp.where(keep, kernel, jnp.zeros((), kernel.dtype)), keep, finite


@dataclasses.dataclass(frozen=True)
class ScoreMethod:
    """A criterion plus selection: score each weight, keep the best of each group.

    Attributes:
      score_fn: ``(kernel [in, out], statistic) -> scores [in, out]``, higher kept. The
        statistic is an ``InputStats`` (``sq_norms [in]``, ``gram`` or ``None``, ``count``) for
        an ``InputStatistic``, the kernel's array for a ``ModelStatistic``, ``None`` without
        one. It runs under ``jit``, so it must be traceable and hashable (a function is).
      statistic: what the engine collects for it (default: input norms, as Wanda).
      name: shown in progress bars and errors.
    """

    score_fn: Callable[[jax.Array, Any], jax.Array]
    statistic: Statistic = INPUT_NORMS
    name: str = "custom"

    def check(self, pattern: Pattern) -> None:
        """Global selection compares all kernels at once, so it needs scores before any kernel
        is pruned: only a method without calibration statistics has them.

        Raises:
          ValueError: for pattern 'global' with a calibrated method.
        """
        if pattern.kind == GLOBAL and self.statistic is not None:
            raise ValueError(f"pattern 'global' needs a method without calibration statistics "
                             f"(such as magnitude), got method {self.name!r}")

    def prune_layer(self, kernel, statistic, *, sparsity, pattern, path) -> LayerPruning:
        """Keeps the best-scored weights of each of ``pattern``'s groups.

        Raises:
          ValueError: for scores of another shape than the kernel's.
          FloatingPointError: for scores that are not finite (no mask is chosen from them).
        """
        try:
            new_kernel, keep, finite = _select_by_scores(
                kernel, statistic, score_fn=self.score_fn, sparsity=sparsity, pattern=pattern)
        except ValueError as err:
            raise ValueError(f"method {self.name!r} on {path!r}: {err}") from None
        if not bool(finite):
            raise FloatingPointError(f"{self.name} scores of {path!r} contain NaN or Inf; no "
                                     f"mask was chosen from them")
        return LayerPruning(new_kernel, keep, {})


def _wanda(kernel, stats):
    return criteria.wanda_score(kernel, stats.sq_norms)


def _obd(kernel, stats):
    # The layer-wise loss's Hessian is 2 X^T X; its diagonal is the inputs' squared norms.
    return criteria.obd_score(kernel, stats.sq_norms)


MAGNITUDE = ScoreMethod(criteria.magnitude_score, statistic=None, name="magnitude")
OBD = ScoreMethod(_obd, name="obd")
OBD_FISHER = ScoreMethod(criteria.obd_score, statistic=FISHER, name="obd_fisher")
WANDA = ScoreMethod(_wanda, name="wanda")


@dataclasses.dataclass(frozen=True)
class SparseGPT:
    """SparseGPT's column sweep with the inverse-Hessian update (``sparsegpt_with_retry``).

    Attributes:
      blocksize: the lazy-update block (columns), a multiple of M for N:M.
      damp: dampening, a fraction of the mean Hessian diagonal, in (0, 1].
      quant: a ``jaxprune.quant.QuantSpec`` to quantize the kept weights in the same sweep
        (the paper's joint sparsification and quantization), or ``None``.

    References:
      Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned
      in One-Shot" (Algorithm 1; joint quantization, section 3.5).
    """

    blocksize: int = 128
    damp: float = 0.01
    # Set by config.quantize="joint" (jaxprune.oneshot.registry), not a config field itself.
    quant: QuantSpec | None = dataclasses.field(default=None,
                                                metadata={"config_field": False})
    statistic = GRAM

    @property
    def name(self) -> str:
        return "sparsegpt" if self.quant is None else f"sparsegpt+{self.quant.label}"

    @property
    def quantizes(self) -> bool:
        """Whether the kernels it returns are quantized (the engine then adds no quantizer)."""
        return self.quant is not None

    def check(self, pattern: Pattern) -> None:
        """Raises ``ValueError`` for per-output or global groups and for bad settings."""
        if pattern.kind in (PER_OUTPUT, GLOBAL):
            raise ValueError(f"method 'sparsegpt' chooses its unstructured mask per block of "
                             f"columns; pattern must be 'unstructured' or N:M, got "
                             f"{str(pattern)!r}")
        sparsegpt.check_sparsegpt_settings(
            self.blocksize, self.damp, pattern if pattern.is_n_of_m else None)

    def prune_layer(self, kernel, statistic, *, sparsity, pattern, path) -> LayerPruning:
        """Prunes and reconstructs one kernel from its inputs' Gram matrix.

        Raises:
          FloatingPointError: when the solve fails even with raised dampening.
        """
        if self.quant is not None:
            self.quant.check_layer(kernel.shape[0], path)
        result, damp = sparsegpt.sweep_with_retry(
            kernel, statistic.gram, name=path,
            sparsity=None if pattern.is_n_of_m else sparsity,
            pattern=pattern if pattern.is_n_of_m else None,
            quant=self.quant, blocksize=self.blocksize, damp=self.damp)
        return LayerPruning(result.kernel, result.keep, {"damp": damp}, result.quantized)


@dataclasses.dataclass(frozen=True)
class KeepNonzero:
    """Prunes nothing more: keeps every non-zero weight (all of a dense kernel's, a pruned
    kernel's mask). With a quantizer it makes the engine a post-training quantizer that keeps
    whatever sparsity the model already has."""

    statistic = None
    name = "dense"

    def check(self, pattern: Pattern) -> None:
        """Any pattern: nothing is selected."""

    def prune_layer(self, kernel, statistic, *, sparsity, pattern, path) -> LayerPruning:
        """The kernel as it is, and its non-zero entries as the mask."""
        del statistic, sparsity, pattern, path
        return LayerPruning(kernel, kernel != 0, {})


KEEP_NONZERO = KeepNonzero()


def method_name(method) -> str:
    """A method's ``name``, or its class name when it has none."""
    return getattr(method, "name", type(method).__name__)


def wrapper_statistic(base, wrapper: str) -> InputStatistic:
    """What a method wrapping ``base`` (DSnoT, channel permutation) has the engine collect:
    the base's Gram matrix if it asks for one (it includes the norms), else the input norms.

    Raises:
      ValueError: for a base with a statistic of another kind (a whole-model one), which the
        wrapper cannot combine with the inputs' statistics.
    """
    statistic = getattr(base, "statistic", None)
    if statistic is not None and not isinstance(statistic, InputStatistic):
        raise ValueError(f"{wrapper} works on the calibration inputs' statistics; base method "
                         f"{method_name(base)!r} needs its own ({statistic.name}), which "
                         f"cannot be combined with them")
    return GRAM if statistic == GRAM else INPUT_NORMS


def statistic_for(base, statistic):
    """The statistic a wrapper hands its base: none for a base that collects none."""
    return None if base.statistic is None else statistic
