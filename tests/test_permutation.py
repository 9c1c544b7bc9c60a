"""RIA's channel permutation: the same permutation as a float64 reference that finds each
matching by brute force, N:M along the permuted order, folded back to the same function, more
score kept, and bad input refused before work."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import criteria, masks, models, oneshot
from jaxprune.patterns import parse_pattern
from tests.oneshot_fields import oneshot_fields

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)


def nm_kept(scores, n, m):
    groups = scores.reshape(-1, m, scores.shape[1])
    return np.sort(groups, axis=1)[:, m - n:, :].sum()


def reference_permutation(scores, n, m):
    """The paper's two steps in float64, each matching by trying every assignment (and
    checking that the best is unique, so that the comparison is well posed)."""
    dim, groups = scores.shape[0], scores.shape[0] // m
    keep_count = np.zeros(dim)
    for out in range(scores.shape[1]):
        ranked = sorted(range(dim), key=lambda i: (scores[i, out], i))
        keep_count[ranked[dim - dim * n // m:]] += 1
    by_count = sorted(range(dim), key=lambda i: (keep_count[i], i))
    layout = np.array([[by_count[p * groups + g] for p in range(m)] for g in range(groups)])
    for position in sorted({0, m - 1}):
        channels = layout[:, position].copy()
        trials = []
        for order in itertools.permutations(range(groups)):
            trial = layout.copy()
            trial[:, position] = channels[list(order)]
            trials.append((nm_kept(scores[trial.reshape(-1)], n, m), trial))
        values = sorted(value for value, _ in trials)
        assert values[-1] - values[-2] > 1e-9 * values[-1], "the best matching is not unique"
        layout = max(trials, key=lambda t: t[0])[1]
    return layout.reshape(-1)


def layer_case(seed, dim=20, out=12):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 32, dim)) * rng.uniform(1, 2, size=dim)
    kernel = rng.standard_normal((dim, out)).astype(np.float32)
    return kernel, oneshot.batch_input_stats(jnp.asarray(x, jnp.float32), with_gram=True)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4)])
def test_permutation_matches_the_brute_force_reference(n, m):
    kernel, stats = layer_case(11)
    scores = np.asarray(criteria.wanda_score(jnp.asarray(kernel), stats.sq_norms), np.float64)
    perm = oneshot.ria_permutation(scores, n, m)
    np.testing.assert_array_equal(perm, reference_permutation(scores, n, m))
    assert sorted(perm) == list(range(len(perm)))
    assert oneshot.kept_score(scores[perm], n, m) > oneshot.kept_score(scores, n, m)


@pytest.mark.parametrize("base", [oneshot.WANDA, oneshot.SparseGPT(blocksize=4)])
def test_permuted_pruning_is_n_of_m_in_the_permuted_order_and_folded_back(base):
    kernel, stats = layer_case(12)
    pattern = parse_pattern("2:4")
    method = oneshot.ChannelPermutation(base)
    result = method.prune_layer(jnp.asarray(kernel), stats, sparsity=0.5, pattern=pattern,
                                path="w")
    scores = np.asarray(criteria.wanda_score(jnp.asarray(kernel), stats.sq_norms), np.float64)
    perm = reference_permutation(scores, 2, 4)
    keep = np.asarray(result.keep)
    assert masks.is_n_of_m(jnp.asarray(keep[perm]), 2, 4)
    assert not masks.is_n_of_m(jnp.asarray(keep), 2, 4)
    assert result.info["permute_gain"] > 1
    # The base on the permuted layer, then folded back: the same function of the inputs.
    permuted = oneshot.InputStats(stats.sq_norms[perm], stats.gram[perm][:, perm], stats.count,
                                  stats.sums[perm], stats.windows)
    direct = base.prune_layer(jnp.asarray(kernel[perm]), permuted, sparsity=0.5,
                              pattern=pattern, path="w")
    x = np.random.default_rng(0).standard_normal((5, kernel.shape[0])).astype(np.float32)
    np.testing.assert_allclose(x @ np.asarray(result.kernel),
                               x[:, perm] @ np.asarray(direct.kernel), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(keep[perm], np.asarray(direct.keep))


def test_permute_by_config_through_the_engine():
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (4, 16))
    fields = oneshot_fields(pattern="2:4", batch_size=2, refine="dsnot", permute=True,
                            dsnot_cycles=10, dsnot_threshold=0.0, dsnot_var_power=1.0)
    settings = oneshot.settings_from_config(fields)
    assert settings.method == oneshot.ChannelPermutation(oneshot.DSnoT(oneshot.WANDA, 10, 0.0))
    result = oneshot.prune_oneshot(model, segments, settings, progress=False)
    assert oneshot.achieved_sparsity(result) == 0.5
    assert all(row["permute_gain"] >= 1 for row in result.layers)
    leaves = [m for m in jax.tree.leaves(result.masks) if m is not None]
    assert len(leaves) == 7 * CONFIG.num_layers


def test_permutation_refuses_patterns_that_are_not_n_of_m_and_bad_flags():
    with pytest.raises(ValueError, match="pattern must be N:M .* got 'per_output'"):
        oneshot.ChannelPermutation().check(parse_pattern("per_output"))
    with pytest.raises(ValueError, match="Fisher diagonal., which cannot be combined"):
        oneshot.ChannelPermutation(oneshot.OBD_FISHER)
    with pytest.raises(ValueError, match="config.permute must be True or False, got 'yes'"):
        oneshot.settings_from_config(oneshot_fields(pattern="2:4", permute="yes"))
    with pytest.raises(ValueError, match="input size 18 is not a multiple of M=4"):
        kernel, stats = layer_case(3, dim=18)
        oneshot.ChannelPermutation().prune_layer(jnp.asarray(kernel), stats, sparsity=0.5,
                                                 pattern=parse_pattern("2:4"), path="w")
