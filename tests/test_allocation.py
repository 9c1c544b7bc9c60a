"""Allocation: default filter, overrides, uniform and ERK budgets."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxprune as jp


def llama_like():
    return {
        "embed_tokens": {"embedding": jnp.ones((32, 8))},
        "layers": [
            {
                "attn": {"q_proj": {"kernel": jnp.ones((8, 8))},
                         "o_proj": {"kernel": jnp.ones((8, 8))}},
                "mlp": {"up_proj": {"kernel": jnp.ones((8, 16)), "bias": jnp.ones(16)},
                        "down_proj": {"kernel": jnp.ones((16, 8))}},
                "input_norm": {"scale": jnp.ones(8)},
            }
        ],
        "final_norm": {"scale": jnp.ones(8)},
        "lm_head": {"kernel": jnp.ones((8, 32))},
    }


def values_by_path(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    return {jp.path_to_str(p): v for p, v in flat}


def test_uniform_prunes_body_kernels_only():
    values = values_by_path(jp.uniform(llama_like(), 0.5))
    assert values == {
        "embed_tokens/embedding": None,
        "layers/0/attn/q_proj/kernel": 0.5,
        "layers/0/attn/o_proj/kernel": 0.5,
        "layers/0/mlp/up_proj/kernel": 0.5,
        "layers/0/mlp/up_proj/bias": None,
        "layers/0/mlp/down_proj/kernel": 0.5,
        "layers/0/input_norm/scale": None,
        "final_norm/scale": None,
        "lm_head/kernel": None,
    }


def test_overrides_first_match_wins_and_can_prune_the_head():
    overrides = {r"down_proj": None, r"proj": 0.7, r"^lm_head/": 0.25}
    values = values_by_path(jp.uniform(llama_like(), 0.5, overrides=overrides))
    assert values["layers/0/mlp/down_proj/kernel"] is None
    assert values["layers/0/attn/q_proj/kernel"] == 0.7
    # "proj" also matches the bias path: an override is applied where asked.
    assert values["layers/0/mlp/up_proj/bias"] == 0.7
    assert values["lm_head/kernel"] == 0.25


def test_override_that_matches_nothing_is_refused():
    with pytest.raises(ValueError, match=r"overrides key 'gate_proj' matches no parameter path"):
        jp.uniform(llama_like(), 0.5, overrides={"gate_proj": 0.6})


def test_invalid_override_regex_or_value_is_refused():
    with pytest.raises(ValueError, match=r"overrides key '\(' is not a valid regular expression"):
        jp.uniform(llama_like(), 0.5, overrides={"(": 0.6})
    with pytest.raises(ValueError, match=r"overrides\['proj'\] must be in \[0, 1\)"):
        jp.uniform(llama_like(), 0.5, overrides={"proj": 1.0})


@pytest.mark.parametrize("bad", [1.0, -0.5, 2])
def test_uniform_sparsity_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        jp.uniform(llama_like(), bad)


def test_erk_worked_example():
    # A (4x4): ERK ratio 8/16; B (64x64): 128/4096. At 90% sparsity A would need density
    # 0.5 * 411.2 / 136 > 1, so it stays dense and B keeps 411.2 - 16 of its 4096 weights.
    params = {"a": jnp.ones((4, 4)), "b": jnp.ones((64, 64))}
    values = jp.erk(params, 0.9)
    assert values["a"] == 0.0
    assert values["b"] == pytest.approx(1 - (0.1 * 4112 - 16) / 4096, abs=1e-12)


@given(st.lists(st.tuples(st.integers(1, 64), st.integers(1, 64)), min_size=1, max_size=6),
       st.floats(0.05, 0.95))
def test_erk_meets_the_budget_and_follows_the_ratios(shapes, sparsity):
    params = {f"l{i}": jnp.ones(s) for i, s in enumerate(shapes)}
    values = jp.erk(params, sparsity)
    sizes = {k: math.prod(s) for k, s in zip(params, shapes, strict=True)}
    kept = sum(sizes[k] * (1 - values[k]) for k in params)
    assert kept == pytest.approx((1 - sparsity) * sum(sizes.values()), rel=1e-9)
    assert all(0.0 <= values[k] < 1.0 for k in params)
    # Among leaves that are not dense, density / ERK ratio is one constant.
    ratios = [(1 - values[k]) / (sum(s) / sizes[k]) for k, s in zip(params, shapes, strict=True)
              if values[k] > 0]
    if ratios:
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)


def test_erk_power_zero_is_uniform_and_overrides_stay_out_of_the_budget():
    params = llama_like()
    uniform_values = values_by_path(jp.erk(params, 0.6, power_scale=0.0))
    pruned = [v for v in uniform_values.values() if v is not None]
    np.testing.assert_allclose(pruned, 0.6, rtol=1e-12)
    values = values_by_path(jp.erk(params, 0.6, overrides={"q_proj": 0.9}))
    assert values["layers/0/attn/q_proj/kernel"] == 0.9
    others = ["layers/0/attn/o_proj/kernel", "layers/0/mlp/up_proj/kernel",
              "layers/0/mlp/down_proj/kernel"]
    sizes = {"layers/0/attn/o_proj/kernel": 64, "layers/0/mlp/up_proj/kernel": 128,
             "layers/0/mlp/down_proj/kernel": 128}
    kept = sum(sizes[p] * (1 - values[p]) for p in others)
    assert kept == pytest.approx(0.4 * 320)
