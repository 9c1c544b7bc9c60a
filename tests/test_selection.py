"""Selection rules against float64 NumPy references, under jit and eagerly (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import jaxprune as jp
from tests import budget, reference

DTYPES = [jnp.float32, jnp.bfloat16]


@st.composite
def score_arrays(draw, *, min_rank=1, max_rank=3, axis0_multiple=1, max_dim=12):
    """Random scores with optional ties, negative values and -0.0; never all zero."""
    rank = draw(st.integers(min_rank, max_rank))
    shape = [draw(st.integers(1, max_dim)) for _ in range(rank)]
    shape[0] = axis0_multiple * draw(st.integers(1, max(1, max_dim // axis0_multiple)))
    seed = draw(st.integers(0, 2**31 - 1))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape)
    tie_levels = draw(st.sampled_from([None, 1, 4]))
    if tie_levels is not None:
        values = np.round(values * tie_levels) / tie_levels
        values[values == 0] = rng.choice([0.0, -0.0], size=int(np.sum(values == 0)))
    assume(np.any(values != 0))
    return jnp.asarray(values, dtype)


percent = st.integers(0, 99)


@budget.compiling(0.5)
@given(score_arrays(), percent)
def test_per_tensor_prunes_exact_count_like_reference(scores, pct):
    size = scores.size
    mask = jp.select_per_tensor(scores, pct / 100)
    assert mask.dtype == jnp.bool_ and mask.shape == scores.shape
    # The documented rule floor(s * n), computed exactly in integers.
    assert int(mask.sum()) == size - (pct * size) // 100
    np.testing.assert_array_equal(mask, reference.per_tensor(scores, (pct * size) // 100))


@budget.compiling(0.5)
@given(score_arrays(min_rank=2), percent)
def test_per_output_every_unit_keeps_same_count(scores, pct):
    mask = jp.select_per_output(scores, pct / 100)
    rows = scores.size // scores.shape[-1]
    kept_per_unit = np.asarray(mask).reshape(-1, scores.shape[-1]).sum(axis=0)
    assert np.all(kept_per_unit == rows - (pct * rows) // 100)
    np.testing.assert_array_equal(mask, reference.per_output(scores, (pct * rows) // 100))


@st.composite
def n_of_m_cases(draw):
    m = draw(st.sampled_from([2, 4, 8]))
    n = draw(st.integers(0, m - 1))
    return n, m, draw(score_arrays(axis0_multiple=m, max_dim=16))


@budget.compiling(0.25)
@given(n_of_m_cases())
def test_n_of_m_keeps_exactly_n_per_group_like_reference(case):
    n, m, scores = case
    mask = jp.select_n_of_m(scores, n, m)
    groups = np.asarray(mask).reshape(scores.shape[0] // m, m, -1).sum(axis=1)
    assert np.all(groups == n)
    assert bool(jp.is_n_of_m(mask, n, m))
    np.testing.assert_array_equal(mask, reference.n_of_m(scores, n, m))


@st.composite
def score_trees(draw):
    leaves = draw(st.lists(score_arrays(max_dim=8), min_size=1, max_size=4))
    percents = draw(st.lists(percent, min_size=len(leaves), max_size=len(leaves)))
    return leaves, percents


@budget.compiling(0.25)
@given(score_trees())
def test_global_matches_numpy_reference(case):
    leaves, percents = case
    tree = {f"w{i}": leaf for i, leaf in enumerate(leaves)}
    sparsity = {f"w{i}": p / 100 for i, p in enumerate(percents)}
    masks = jp.select_masks(tree, sparsity, "global")
    # floor(sum_l s_l n_l), exactly in integers.
    prune_count = sum(p * leaf.size for p, leaf in zip(percents, leaves, strict=True)) // 100
    expected = reference.global_(leaves, prune_count)
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(masks[f"w{i}"], want)
    assert sum(int(m.sum()) for m in masks.values()) == sum(x.size for x in leaves) - prune_count


def test_global_skips_dense_leaves_and_breaks_ties_by_leaf_order():
    tree = {"a": jnp.full((4,), 2.0), "b": jnp.full((4,), 2.0), "c": jnp.arange(1.0, 5.0)}
    masks = jp.select_masks(tree, {"a": 0.5, "b": 0.5, "c": None}, "global")
    assert masks["c"] is None
    # Four prunes among eight equal scores: all of "a" goes first, it comes first.
    np.testing.assert_array_equal(masks["a"], [False] * 4)
    np.testing.assert_array_equal(masks["b"], [True] * 4)


def test_ties_prune_the_earlier_entry_first():
    scores = jnp.full((2, 3), 1.5, jnp.float32)
    np.testing.assert_array_equal(
        jp.select_per_tensor(scores, 0.5), [[False, False, False], [True, True, True]]
    )
    np.testing.assert_array_equal(jp.select_n_of_m(jnp.ones((4, 1)), 2, 4), [[0], [0], [1], [1]])


def test_negative_zero_ties_with_zero():
    scores = jnp.array([0.0, -0.0, 0.0, -0.0, 1.0, -1.0])
    np.testing.assert_array_equal(
        jp.select_per_tensor(scores, 0.5), [False, False, True, True, True, False]
    )
    (mask,) = jp.select_global([scores], 3)
    np.testing.assert_array_equal(mask, [False, False, True, True, True, False])


PATTERNS = ["unstructured", "per_output", "global", "2:4", "1:4", "4:8"]


@budget.compiling(0.125)
@given(score_trees(), st.sampled_from(PATTERNS), st.integers(0, 9))
def test_jit_and_eager_give_identical_masks(case, pattern, tenth):
    leaves, _ = case
    parsed = jp.parse_pattern(pattern)
    # Shape the leaves for the pattern: rank 2 and an input axis divisible by M.
    m = parsed.m if parsed.is_n_of_m else 1
    tree = {f"w{i}": jnp.tile(leaf.reshape(leaf.shape[0], -1), (m, 2))
            for i, leaf in enumerate(leaves)}
    sparsity = parsed.sparsity if parsed.is_n_of_m else tenth / 10
    eager = jp.select_masks(tree, sparsity, pattern)
    jitted = jax.jit(lambda t: jp.select_masks(t, sparsity, pattern))(tree)
    for name in tree:
        np.testing.assert_array_equal(eager[name], jitted[name])


@budget.compiling(0.125)
@given(score_trees(), st.sampled_from(["unstructured", "per_output", "global"]))
def test_traced_sparsity_counts_like_static_sparsity(case, pattern):
    leaves, percents = case
    tree = {f"w{i}": jnp.tile(leaf.reshape(leaf.shape[0], -1), (1, 2))
            for i, leaf in enumerate(leaves)}
    static = {f"w{i}": p / 100 for i, p in enumerate(percents)}
    traced = jax.jit(lambda t, s: jp.select_masks(t, s, pattern))(tree, static)
    eager = jp.select_masks(tree, static, pattern)
    for name in tree:
        np.testing.assert_array_equal(eager[name], traced[name])


def test_num_pruned_rule():
    assert jp.num_pruned(0.29, 100) == 29  # 0.29 * 100 == 28.999999999999996 in float64
    assert jp.num_pruned(0.5, 7) == 3
    assert jp.num_pruned(0.0, 5) == 0
    assert int(jax.jit(jp.num_pruned, static_argnums=1)(0.29, 100)) == 29


# Bad input: each error names the argument and what is allowed, before any work.


def test_nan_scores_are_refused_with_the_path():
    scores = {"layer": {"kernel": jnp.array([[1.0, jnp.nan], [2.0, 3.0]])}}
    with pytest.raises(ValueError, match=r"'layer/kernel' contain NaN"):
        jp.select_masks(scores, 0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"sparsity at 'w' must be in \[0, 1\)"):
        jp.select_masks({"w": jnp.arange(1.0, 9.0)}, bad)


def test_sparsity_of_wrong_type_is_refused():
    with pytest.raises(TypeError, match="sparsity at 'w' must be a real number"):
        jp.select_masks({"w": jnp.arange(1.0, 9.0)}, {"w": "half"})


@pytest.mark.parametrize(
    "pattern, message",
    [("4:4", "N < M"), ("5:4", "N < M"), ("-1:4", "N >= 0"), ("2:0", "M >= 1"),
     ("sparse", "pattern must be one of")],
)
def test_bad_patterns_are_refused(pattern, message):
    with pytest.raises(ValueError, match=message):
        jp.select_masks({"w": jnp.ones((8, 2))}, 0.5, pattern)


def test_input_axis_not_divisible_by_m_is_refused():
    with pytest.raises(ValueError, match=r"axis 0 \(the input axis\) of 'w' .* divisible by M=4"):
        jp.select_masks({"w": jnp.ones((6, 2))}, 0.5, "2:4")


def test_n_of_m_with_another_sparsity_is_refused():
    with pytest.raises(ValueError, match="pattern 2:4 implies 0.5"):
        jp.select_masks({"w": jnp.ones((8, 2))}, 0.75, "2:4")


def test_per_output_on_a_vector_is_refused():
    with pytest.raises(ValueError, match="'b' has shape \\(8,\\)"):
        jp.select_masks({"b": jnp.arange(8.0)}, 0.5, "per_output")


def test_sparsity_tree_of_other_structure_is_refused():
    with pytest.raises(ValueError, match="missing from sparsity: 'b'"):
        jp.select_masks({"a": jnp.ones(4), "b": jnp.ones(4)}, {"a": 0.5}, "unstructured")
