"""Channel permutation for N:M sparsity (RIA's heuristic; Zhang et al., ICLR 2024).

An N:M mask keeps N of every M consecutive inputs of each output unit. Which inputs share a
group is an accident of the layer's layout; permuting the input channels first lets each group
mix important and unimportant channels, so fewer important weights are lost. RIA's heuristic,
on a kernel's scores (higher kept):

1. channel reallocation: count how many weights of each input channel an unstructured
   per-output selection at the same sparsity would keep, sort the channels by that count, and
   deal them out so that group g takes the g-th channel of each of the M slices of the sorted
   order (one channel from each quantile);
2. linear sum assignment: for the first and then the last position of the groups, exchange the
   channels at that position between groups so that the total score kept under N:M is the
   largest (a maximum-weight matching between channels and groups).

The method value ``ChannelPermutation(base)`` permutes a kernel's inputs (and its calibration
statistics), lets any N:M method prune the permuted kernel, and folds the permutation back: the
kernel and mask it returns are in the layer's own input order, so the model computes exactly
the pruned function with no extra operation; its mask is N:M along the permuted order, the one a
2:4 kernel would store (and whose inputs it would gather in that order).

RIA's code applies each matching's assignment in the inverse direction (it gives group ``i``
the channel that the matching assigned to group ``col[i]``); here the channel goes where the
matching puts it, so the kept score never falls below that of the reallocation alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import criteria, selection
from jaxprune.oneshot.methods import (
    WANDA,
    LayerPruning,
    ScoreMethod,
    method_name,
    statistic_for,
    wrapper_statistic,
)
from jaxprune.oneshot.stats import InputStats
from jaxprune.patterns import Pattern


def kept_score(scores: np.ndarray, n: int, m: int) -> float:
    """The total of the scores an N:M selection keeps (``scores`` ``[in, out]``, groups of M
    consecutive inputs)."""
    groups = scores.reshape(-1, m, scores.shape[1])
    return float(np.sort(groups, axis=1)[:, m - n:, :].sum())


def _reallocate(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Step 1: channels dealt out by their count of weights kept per output unit (jaxprune's
    own per-output selection at the N:M pattern's sparsity)."""
    dim = scores.shape[0]
    kept = np.asarray(selection.select_per_output(jnp.asarray(scores, jnp.float32), 1 - n / m))
    by_count = np.argsort(kept.sum(axis=1), kind="stable")
    groups = dim // m
    perm = np.empty(dim, np.int64)
    for position in range(m):
        perm[position::m] = by_count[position * groups:(position + 1) * groups]
    return perm


def _match_position(scores: np.ndarray, perm: np.ndarray, n: int, m: int,
                    position: int) -> np.ndarray:
    """Step 2 for one position: the matching of that position's channels to groups that
    keeps the most score.

    Group ``b`` with channel ``a`` at ``position`` keeps, per output, the N best of its other
    M - 1 channels plus ``max(0, s_a - t_b)``, where ``t_b`` is the N-th best of those (``a``
    displaces it when larger); so the matching's value table costs one pass over
    ``[channels, groups, out]`` rather than a sort per pair.
    """
    from scipy.optimize import linear_sum_assignment

    groups = perm.reshape(-1, m)
    candidates = scores[groups[:, position]]  # [G, out]: each group's channel at `position`
    others = np.sort(scores[np.delete(groups, position, axis=1)], axis=1)  # [G, m - 1, out]
    kept_without = others[:, m - 1 - n:, :].sum(axis=(1, 2))  # [G]
    displaced = others[:, m - 1 - n, :]  # [G, out]: the N-th best of the other channels
    value = np.empty((len(groups), len(groups)))
    for start in range(0, len(groups), 64):
        gain = np.maximum(candidates[:, None, :] - displaced[None, start:start + 64, :], 0.0)
        value[:, start:start + 64] = kept_without[None, start:start + 64] + gain.sum(axis=2)
    channel, group = linear_sum_assignment(value, maximize=True)
    matched = groups.copy()
    matched[group, position] = groups[channel, position]
    return matched.reshape(-1)


def ria_permutation(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """RIA's channel permutation of a kernel's inputs (module docstring).

    Args:
      scores: ``[in, out]`` scores, higher kept; ``in`` a multiple of ``m``. The first step
        ranks them in float32, as jaxprune's selection does.
      n, m: the N:M pattern (N kept of every M).

    Returns:
      ``perm`` ``[in]``: the permuted kernel is ``kernel[perm]``.

    References:
      Zhang et al. 2024, "Plug-and-Play: An Efficient Post-training Pruning Method for Large
      Language Models" (ICLR 2024), section on channel permutation.
    """
    scores = np.asarray(scores, np.float64)
    perm = _reallocate(scores, n, m)
    for position in sorted({0, m - 1}):
        perm = _match_position(scores, perm, n, m, position)
    return perm


def _permuted_stats(stats: InputStats | None, perm) -> InputStats | None:
    if stats is None:
        return None
    gram = None if stats.gram is None else stats.gram[perm][:, perm]
    sums = None if stats.sums is None else stats.sums[perm]
    return stats._replace(sq_norms=stats.sq_norms[perm], gram=gram, sums=sums)


def _wanda_scores(kernel, stats):
    return criteria.wanda_score(kernel, stats.sq_norms)


@dataclasses.dataclass(frozen=True)
class ChannelPermutation:
    """Any N:M method run on RIA's channel permutation of each kernel, folded back.

    Attributes:
      base: the N:M method pruning the permuted kernel; the permutation is chosen from its
        scores if it is a ``ScoreMethod`` (Wanda, RIA, magnitude), else from Wanda's.

    Raises:
      ValueError: for a base with a whole-model statistic (Fisher).

    References:
      Zhang et al. 2024, "Plug-and-Play: An Efficient Post-training Pruning Method for Large
      Language Models" (ICLR 2024).
    """

    base: Any = WANDA

    def __post_init__(self):
        wrapper_statistic(self.base, "channel permutation")

    @property
    def statistic(self):
        """The base's input statistic, or the input norms the permutation's scores need."""
        return wrapper_statistic(self.base, "channel permutation")

    @property
    def name(self) -> str:
        """``<base>+permute``."""
        return f"{method_name(self.base)}+permute"

    def check(self, pattern: Pattern) -> None:
        """Refuses a pattern that is not N:M, and what the base refuses.

        Raises:
          ValueError: naming the pattern.
        """
        if not pattern.is_n_of_m:
            raise ValueError(f"channel permutation rearranges inputs for N:M groups; pattern "
                             f"must be N:M (such as 2:4), got {str(pattern)!r}")
        self.base.check(pattern)

    def _scores(self, kernel, statistic):
        if isinstance(self.base, ScoreMethod):
            return self.base.score_fn(kernel, statistic_for(self.base, statistic))
        return _wanda_scores(kernel, statistic)

    def prune_layer(self, kernel, statistic, *, sparsity, pattern, path) -> LayerPruning:
        """Permutes, prunes by the base, folds back; reports the N:M kept score's gain.

        Raises:
          ValueError: for an input size that is not a multiple of M.
        """
        if kernel.shape[0] % pattern.m:
            raise ValueError(f"{path!r}: input size {kernel.shape[0]} is not a multiple of "
                             f"M={pattern.m}")
        scores = np.asarray(jax.device_get(self._scores(kernel, statistic)), np.float64)
        perm = ria_permutation(scores, pattern.n, pattern.m)
        base_stat = _permuted_stats(statistic_for(self.base, statistic), perm)
        pruned = self.base.prune_layer(kernel[perm], base_stat, sparsity=sparsity,
                                       pattern=pattern, path=path)
        inverse = jnp.asarray(np.argsort(perm))
        gain = kept_score(scores[perm], pattern.n, pattern.m) / kept_score(
            scores, pattern.n, pattern.m)
        return LayerPruning(pruned.kernel[inverse], pruned.keep[inverse],
                            {**pruned.info, "permute_gain": gain})
