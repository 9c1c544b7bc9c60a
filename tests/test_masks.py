"""Mask trees: apply, combine, count, report, N:M validation and structure checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxprune as jp


def small_params():
    return {
        "dense": {"kernel": jnp.arange(1.0, 13.0).reshape(4, 3),
                  "bias": jnp.array([1.0, -2.0, 3.0])},
        "out": {"kernel": jnp.arange(-4.0, 4.0, dtype=jnp.bfloat16).reshape(4, 2)},
    }


def small_masks():
    return {
        "dense": {"kernel": jnp.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], bool),
                  "bias": None},
        "out": {"kernel": jnp.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)},
    }


def test_apply_masks_zeroes_pruned_entries_and_keeps_dtype():
    params, masks = small_params(), small_masks()
    pruned = jp.apply_masks(params, masks)
    np.testing.assert_array_equal(
        pruned["dense"]["kernel"], np.where(masks["dense"]["kernel"], params["dense"]["kernel"], 0)
    )
    np.testing.assert_array_equal(pruned["dense"]["bias"], params["dense"]["bias"])
    assert pruned["out"]["kernel"].dtype == jnp.bfloat16
    jitted = jax.jit(jp.apply_masks)(params, masks)
    for a, b in zip(jax.tree.leaves(pruned), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(a, b)


def test_combine_masks_and_or_with_none_as_all_true():
    a = {"x": jnp.array([1, 1, 0, 0], bool), "y": None, "z": jnp.array([1, 0], bool)}
    b = {"x": jnp.array([1, 0, 1, 0], bool), "y": jnp.array([0, 1], bool), "z": None}
    both = jp.combine_masks(a, b, mode="and")
    np.testing.assert_array_equal(both["x"], [1, 0, 0, 0])
    np.testing.assert_array_equal(both["y"], [0, 1])
    np.testing.assert_array_equal(both["z"], [1, 0])
    either = jp.combine_masks(a, b, mode="or")
    np.testing.assert_array_equal(either["x"], [1, 1, 1, 0])
    assert either["y"] is None and either["z"] is None
    with pytest.raises(ValueError, match="mode must be 'and' or 'or'"):
        jp.combine_masks(a, b, mode="xor")


def test_count_kept_eager_and_jit():
    masks = small_masks()
    kept, total = jp.count_kept(masks)
    assert (int(kept), total) == (7 + 4, 12 + 8)
    kept_jit = jax.jit(lambda m: jp.count_kept(m)[0])(masks)
    assert int(kept_jit) == 11


def test_sparsity_report_rows_and_totals():
    report = jp.sparsity_report(small_params(), small_masks())
    by_path = {row.path: row for row in report.rows}
    assert set(by_path) == {"dense/kernel", "dense/bias", "out/kernel"}
    assert by_path["dense/kernel"].shape == (4, 3)
    assert by_path["dense/kernel"].kept == 7
    assert by_path["dense/kernel"].sparsity == pytest.approx(5 / 12)
    assert by_path["dense/bias"].masked is False and by_path["dense/bias"].kept == 3
    assert report.total == 12 + 3 + 8
    assert report.kept == 7 + 3 + 4
    assert report.masked_sparsity == pytest.approx(1 - 11 / 20)
    table = report.to_markdown()
    assert "| dense/kernel | 4x3 | 7 | 12 | 0.4167 |" in table
    assert "dense/bias (dense)" in table
    assert "| **total** | | 14 | 23 |" in table


@given(st.sampled_from([(1, 4), (2, 4), (4, 8), (1, 2)]), st.integers(0, 2**31 - 1))
def test_n_of_m_check_accepts_valid_and_rejects_one_extra(nm, seed):
    n, m = nm
    rng = np.random.default_rng(seed)
    groups, cols = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    mask = np.zeros((groups, m, cols), bool)
    for g in range(groups):
        for c in range(cols):
            mask[g, rng.choice(m, n, replace=False), c] = True
    mask = mask.reshape(groups * m, cols)
    assert bool(jp.is_n_of_m(mask, n, m))
    jp.check_n_of_m_masks({"w": jnp.asarray(mask), "b": None}, f"{n}:{m}")
    # Switch on one more entry in a random group: that group now keeps n + 1.
    off = np.flatnonzero(~mask)
    broken = mask.copy().ravel()
    broken[rng.choice(off)] = True
    broken = broken.reshape(mask.shape)
    assert not bool(jp.is_n_of_m(broken, n, m))
    with pytest.raises(ValueError, match=f"'w' keeps more than {n} of some group of {m}"):
        jp.check_n_of_m_masks({"w": jnp.asarray(broken)}, f"{n}:{m}")


def test_n_of_m_check_names_indivisible_mask():
    with pytest.raises(ValueError, match="mask at 'w'.*not divisible by M=4"):
        jp.check_n_of_m_masks({"w": jnp.ones((6, 2), bool)}, "2:4")


def test_mask_tree_of_other_structure_is_refused_with_paths():
    masks = {"dense": {"kernel": small_masks()["dense"]["kernel"]}, "extra": None}
    with pytest.raises(ValueError, match=r"missing from masks: 'dense/bias', 'out/kernel'.*"
                                         r"not in params: 'extra'"):
        jp.apply_masks(small_params(), masks)


def test_mask_of_wrong_shape_or_dtype_is_refused():
    masks = small_masks()
    masks["out"]["kernel"] = jnp.ones((2, 4), bool)
    with pytest.raises(ValueError, match=r"mask at 'out/kernel' has shape \(2, 4\)"):
        jp.apply_masks(small_params(), masks)
    masks["out"]["kernel"] = jnp.ones((4, 2), jnp.float32)
    with pytest.raises(ValueError, match="mask at 'out/kernel' must be boolean"):
        jp.apply_masks(small_params(), masks)
