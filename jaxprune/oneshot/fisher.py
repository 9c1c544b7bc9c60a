"""Empirical Fisher diagonal of the language-modelling loss on calibration segments."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jaxprune import paths
from jaxprune.losses import next_token_nll


def _lm_loss(graphdef, state, batch):
    return jnp.mean(next_token_nll(nnx.merge(graphdef, state), batch))


@functools.partial(jax.jit, static_argnums=0)
def _squared_grads(graphdef, state, batch):
    grads = jax.grad(_lm_loss, argnums=1)(graphdef, state, batch)
    return jax.tree.map(jnp.square, grads)


def empirical_fisher_diagonal(model, segments: np.ndarray, wanted: set[str], *,
                              progress: bool = True) -> dict[str, jax.Array]:
    """Mean over calibration segments of the squared gradient of each segment's mean LM loss.

    Args:
      model: an NNX causal LM.
      segments: ``[N, L]`` token ids; each segment is one sample of the empirical Fisher.
      wanted: parameter paths whose diagonal is returned.
      progress: show a progress bar.

    Returns:
      ``{path: Fisher diagonal of the parameter's shape}`` in float32.

    References:
      LeCun et al. 1990 (OBD) with the empirical Fisher as the Hessian estimate, as in
      Hassibi & Stork 1993 and later Fisher-based pruning.
    """
    graphdef, state = nnx.split(model)
    total = None
    for row in tqdm(np.asarray(segments), desc="fisher", unit="segment", disable=not progress):
        squared = _squared_grads(graphdef, state, jnp.asarray(row[None]))
        selected = {p: g for p, g in paths.leaves_with_paths(squared) if p in wanted}
        total = selected if total is None else {p: total[p] + selected[p] for p in total}
    return {p: value / len(segments) for p, value in total.items()}
