"""OWL: outlier-weighted layerwise sparsity (Yin et al. 2024).

Blocks whose Wanda scores hold more outliers (scores above M times the block's mean) keep more
weights. With outlier ratios ``D_l`` per block, the densities are
``(1 - s) + lambda_range * (D_l - min D) / (max D - min D) - mean(...)``, i.e. the ratios are
scaled into ``[0, 2 * lam]`` and centred so that the mean sparsity equals the target ``s``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def outlier_ratio(scores: list[jax.Array], m: float) -> float:
    """Fraction of all entries of ``scores`` (one block's layers) above ``m`` times their mean.

    References:
      Yin et al. 2024, "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for
      Pruning LLMs to High Sparsity".
    """
    flat = jnp.concatenate([jnp.ravel(s) for s in scores])
    return float(jnp.mean(flat > m * jnp.mean(flat)))


def owl_sparsities(ratios: list[float], target: float, lam: float) -> list[float]:
    """Per-block sparsities from outlier ratios (module docstring).

    Args:
      ratios: outlier ratio of each block.
      target: the mean sparsity, in [0, 1).
      lam: half-width of the density range (the paper's lambda, 0.08 by default).

    Returns:
      One sparsity per block, averaging ``target``.

    Raises:
      ValueError: if a resulting sparsity leaves [0, 1) (lower ``lam``).
    """
    ratios = np.asarray(ratios, np.float64)
    spread = ratios.max() - ratios.min()
    scaled = (ratios - ratios.min()) / spread * 2 * lam if spread > 0 else np.zeros_like(ratios)
    density = scaled - scaled.mean() + (1.0 - target)
    sparsity = 1.0 - density
    if np.any(sparsity < 0) or np.any(sparsity >= 1):
        raise ValueError(f"OWL with lambda={lam} gives sparsities {sparsity.round(4).tolist()} "
                         f"outside [0, 1) for target {target}; lower owl_lambda")
    return sparsity.tolist()


@dataclasses.dataclass(frozen=True)
class OWL:
    """Outlier-weighted layerwise sparsity as an allocation of ``prune_oneshot``.

    Attributes:
      owl_lambda: the density half-range ``lambda``, in (0, 0.5).
      owl_m: the outlier threshold, a multiple of the block's mean Wanda score, > 0.

    Raises:
      ValueError: for a setting out of its range, when made.

    References:
      Yin et al. 2024, "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for
      Pruning LLMs to High Sparsity".
    """

    owl_lambda: float = 0.08
    owl_m: float = 5.0

    def __post_init__(self):
        if not 0 < self.owl_lambda < 0.5:
            raise ValueError(f"owl_lambda must be in (0, 0.5), got {self.owl_lambda!r}")
        if not self.owl_m > 0:
            raise ValueError(f"owl_m must be > 0, got {self.owl_m!r}")
