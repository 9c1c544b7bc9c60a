"""Criteria: magnitude, keyed random, and user criteria written with ``leafwise``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxprune as jp


def params_of(dtype):
    rng = np.random.default_rng(0)
    return {
        "a": {"kernel": jnp.asarray(rng.standard_normal((16, 8)), dtype)},
        "b": {"kernel": jnp.asarray(rng.standard_normal((8, 12)), dtype)},
    }


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_magnitude_is_absolute_value_in_float32(dtype):
    params = params_of(dtype)
    scores = jp.magnitude(params)
    for w, s in zip(jax.tree.leaves(params), jax.tree.leaves(scores), strict=True):
        assert s.dtype == jnp.float32
        np.testing.assert_array_equal(s, np.abs(np.asarray(w, np.float32)))


@functools.cache
def _jitted_random_prune(sparsity, pattern):
    return jax.jit(lambda p, key: jp.prune(p, jp.random_criterion(key), sparsity, pattern=pattern))


@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.sampled_from(
    ["unstructured", "per_output", "global", "2:4"]))
def test_random_masks_depend_only_on_the_key(seed, other_seed, pattern):
    params = params_of(jnp.float32)
    sparsity = None if pattern == "2:4" else 0.5

    def masks_for(seed):
        return jp.prune(params, jp.random_criterion(jax.random.PRNGKey(seed)), sparsity,
                        pattern=pattern)

    first, again = masks_for(seed), masks_for(seed)
    # The key is a jit argument: one compilation per pattern, not per example.
    jitted = _jitted_random_prune(sparsity, pattern)(params, jax.random.PRNGKey(seed))
    for a, b, c in zip(jax.tree.leaves(first), jax.tree.leaves(again), jax.tree.leaves(jitted),
                       strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    if seed != other_seed:
        other = masks_for(other_seed)
        # 224 kept of 448 candidates: two keys agreeing on every leaf is out of reach.
        assert any(not np.array_equal(a, b)
                   for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(other), strict=True))


def test_random_scores_of_a_leaf_do_not_depend_on_other_leaves():
    key = jax.random.PRNGKey(3)
    full = jp.random_criterion(key)({"a": jnp.ones((4, 4)), "b": jnp.ones((8, 2))})
    resized = jp.random_criterion(key)({"a": jnp.ones((4, 4)), "b": jnp.ones((2, 2))})
    np.testing.assert_array_equal(full["a"], resized["a"])


def test_leafwise_criterion_reads_matching_stats():
    @jp.leafwise
    def input_weighted(weight, input_norm):
        return jnp.abs(weight) * input_norm[:, None]

    params = {"w": jnp.array([[1.0, -2.0], [3.0, 4.0]]), "v": jnp.array([[5.0]])}
    stats = {"w": jnp.array([10.0, 0.5]), "v": jnp.array([2.0])}
    scores = input_weighted(params, stats)
    np.testing.assert_allclose(scores["w"], [[10.0, 20.0], [1.5, 2.0]])
    np.testing.assert_allclose(scores["v"], [[10.0]])
    with pytest.raises(ValueError, match="missing from stats: 'w'"):
        input_weighted(params, {"v": jnp.array([2.0])})


def test_leafwise_leaves_unscored_where_stats_are_none():
    @jp.leafwise
    def input_weighted(weight, input_norm):
        return jnp.abs(weight) * input_norm[:, None]

    params = {"embed": jnp.ones((10, 4)), "w": jnp.arange(1.0, 9.0).reshape(4, 2)}
    scores = input_weighted(params, {"embed": None, "w": jnp.array([1.0, 2.0, 3.0, 4.0])})
    assert scores["embed"] is None
    masks = jp.select_masks(scores, {"embed": None, "w": 0.5})
    assert masks["embed"] is None and int(masks["w"].sum()) == 4
    with pytest.raises(ValueError, match="scores at 'embed' are None .* its sparsity is 0.5"):
        jp.select_masks(scores, 0.5)
