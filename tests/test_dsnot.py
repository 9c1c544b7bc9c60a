"""DSnoT: exact against a float64 numpy reference written from the paper, swaps that keep every
unit's count (and N:M), through the engine by name, and bad settings refused before work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune import masks, models, oneshot
from jaxprune.oneshot import dsnot
from jaxprune.patterns import parse_pattern
from tests.jit_check import assert_jit_matches_eager
from tests.oneshot_fields import oneshot_fields

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)


def correlated_inputs(rng, windows=4, length=16, dim=32):
    """Calibration inputs ``[windows, length, dim]`` with correlated features and non-zero
    means (DSnoT's error is about the means)."""
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    shift = rng.standard_normal(dim) * 0.8
    return (rng.standard_normal((windows, length, dim)) @ mixing + shift).astype(np.float32)


def dsnot_reference(kernel, keep, x, *, cycles, threshold, var_power, group=0):
    """Algorithm 1 of Zhang et al. 2024 in float64, one output unit at a time, in the paper's
    [out, in] orientation; ``keep`` is the base mask [in, out]."""
    w = np.asarray(kernel, np.float64).T
    flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    per_window = flat.sum(axis=0) / x.shape[0]
    variance = np.maximum(flat.var(axis=0), dsnot._MIN_VARIANCE)
    importance = np.abs(w) * np.sqrt((flat ** 2).sum(axis=0))
    pruned = ~np.asarray(keep).T.copy()
    for r in range(w.shape[0]):
        expected = w[r] * per_window
        error = expected[pruned[r]].sum()
        sign = np.sign(error)
        grow = [i for i in np.argsort(np.where(pruned[r], expected / variance ** var_power,
                                               np.inf), kind="stable") if pruned[r, i]]
        by_importance = np.argsort(importance[r], kind="stable")
        negative = [i for i in by_importance if not pruned[r, i] and expected[i] < 0]
        positive = [i for i in by_importance if not pruned[r, i] and expected[i] > 0]
        cuttable = ~pruned[r].copy()
        for _ in range(cycles):
            if abs(error) <= threshold or not grow:
                break
            regrow = grow.pop() if error > 0 else grow.pop(0)
            if group:
                start = regrow - regrow % group
                members = [i for i in range(start, start + group) if cuttable[i]]
                if not members:
                    break
                cut = min(members, key=lambda i: importance[r, i])
                if np.sign(error + expected[cut] - expected[regrow]) != sign:
                    break
            else:
                side = positive if error < 0 else negative
                if not side:
                    break
                cut = side.pop(0)
            pruned[r, cut], pruned[r, regrow], cuttable[cut] = True, False, False
            error += expected[cut] - expected[regrow]
    return ~pruned.T


def layer_case(seed, pattern, base):
    rng = np.random.default_rng(seed)
    x = correlated_inputs(rng)
    kernel = (rng.standard_normal((32, 24)) / 4).astype(np.float32)
    stats = oneshot.batch_input_stats(jnp.asarray(x), with_gram=True)
    base_keep = base.prune_layer(jnp.asarray(kernel), stats if base.statistic else None,
                                 sparsity=0.5, pattern=pattern, path="w").keep
    return x, kernel, stats, np.asarray(base_keep)


@pytest.mark.parametrize("pattern_name,base", [
    ("per_output", oneshot.WANDA), ("unstructured", oneshot.MAGNITUDE),
    ("2:4", oneshot.WANDA), ("4:8", oneshot.SparseGPT()),
])
def test_dsnot_layer_matches_the_paper_in_float64(pattern_name, base):
    pattern = parse_pattern(pattern_name)
    x, kernel, stats, base_keep = layer_case(4, pattern, base)
    method = oneshot.DSnoT(base, cycles=50, threshold=0.1, var_power=1.0)
    result = method.prune_layer(jnp.asarray(kernel), stats, sparsity=0.5, pattern=pattern,
                                path="w")
    expected = dsnot_reference(kernel, base_keep, x, cycles=50, threshold=0.1, var_power=1.0,
                               group=pattern.m if pattern.is_n_of_m else 0)
    assert result.info["dsnot_swaps"] > 0 and (expected != base_keep).any()
    np.testing.assert_array_equal(result.keep, expected)
    np.testing.assert_array_equal(result.kernel, np.where(expected, kernel, 0))
    np.testing.assert_array_equal(np.sum(result.keep, axis=0), np.sum(base_keep, axis=0))


def test_dsnot_refine_under_jit_equals_eager():
    pattern = parse_pattern("2:4")
    _, kernel, stats, base_keep = layer_case(5, pattern, oneshot.WANDA)
    args = (jnp.asarray(kernel), jnp.asarray(base_keep), stats.sq_norms, stats.sums,
            stats.count, stats.windows)
    options = dict(cycles=20, threshold=0.05, var_power=0.5, group=4)
    assert_jit_matches_eager(oneshot.dsnot_refine, *args, **options)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), group=st.sampled_from([0, 4, 8]),
       cycles=st.integers(1, 40), threshold=st.floats(0.0, 1.0))
def test_swaps_keep_each_units_count_and_the_n_of_m_pattern(seed, group, cycles, threshold):
    rng = np.random.default_rng(seed)
    pattern = parse_pattern(f"{group // 2}:{group}" if group else "unstructured")
    x, kernel, stats, base_keep = layer_case(seed, pattern, oneshot.WANDA)
    keep, swaps = oneshot.dsnot_refine(
        jnp.asarray(kernel), jnp.asarray(base_keep), stats.sq_norms, stats.sums, stats.count,
        stats.windows, cycles=cycles, threshold=threshold, var_power=float(rng.uniform(0, 2)),
        group=group)
    np.testing.assert_array_equal(np.sum(keep, axis=0), np.sum(base_keep, axis=0))
    changed = np.sum(np.asarray(keep) != base_keep, axis=0)
    np.testing.assert_array_equal(changed, 2 * np.asarray(swaps))
    assert np.all(np.asarray(swaps) <= cycles)
    if group:
        assert masks.is_n_of_m(keep, group // 2, group)


def test_dsnot_by_name_through_the_engine_refines_wanda_at_the_same_sparsity():
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (4, 16))
    fields = oneshot_fields(method="wanda", sparsity=0.5, pattern="2:4", batch_size=2,
                            dsnot_cycles=50, dsnot_threshold=0.0, dsnot_var_power=1.0)
    wanda = oneshot.prune_oneshot(model, segments, oneshot.settings_from_config(fields),
                                  progress=False)
    settings_ = oneshot.settings_from_config({**fields, "refine": "dsnot"})
    assert settings_.method == oneshot.DSnoT(oneshot.WANDA, 50, 0.0, 1.0)
    refined = oneshot.prune_oneshot(model, segments, settings_, progress=False)
    assert oneshot.achieved_sparsity(refined) == oneshot.achieved_sparsity(wanda) == 0.5
    assert sum(row["dsnot_swaps"] for row in refined.layers) > 0
    kept = [m for m in jax.tree.leaves(refined.masks) if m is not None]
    assert all(masks.is_n_of_m(m, 2, 4) for m in kept)


@pytest.mark.parametrize("field,value,message", [
    ("dsnot_cycles", 0, "dsnot_cycles must be >= 1, got 0"),
    ("dsnot_cycles", 2.5, "dsnot_cycles must be an integer, got 2.5"),
    ("dsnot_threshold", -0.1, "dsnot_threshold must be a finite number >= 0, got -0.1"),
    ("dsnot_var_power", float("nan"), "dsnot_var_power must be a finite number >= 0, got nan"),
])
def test_bad_dsnot_settings_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=f"config.refine='dsnot': {message}"):
        oneshot.settings_from_config(oneshot_fields(pattern="2:4", refine="dsnot",
                                                    **{field: value}))


def test_dsnot_refuses_a_fisher_base_and_global_selection():
    with pytest.raises(ValueError, match="Fisher diagonal., which cannot be combined"):
        oneshot.DSnoT(oneshot.OBD_FISHER)
    with pytest.raises(ValueError, match="pattern 'global' is not supported"):
        oneshot.DSnoT(oneshot.MAGNITUDE).check(parse_pattern("global"))


def test_output_error_equals_the_errors_of_the_outputs_themselves():
    """``stats.output_error`` from the sums against the outputs computed token by token."""
    from jaxprune.oneshot.stats import batch_input_stats, output_error

    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 20, 16)) + rng.standard_normal(16)  # a mean to shift
    delta = rng.standard_normal((16, 5)) * (rng.random((16, 5)) < 0.5)
    stats = batch_input_stats(jnp.asarray(x, jnp.float32), with_gram=True)
    error = output_error(stats, jnp.asarray(delta, jnp.float32))
    outputs = x.reshape(-1, 16) @ delta
    np.testing.assert_allclose(error.mse, np.mean(np.sum(outputs**2, axis=1)), rtol=1e-4)
    np.testing.assert_allclose(error.mean_sq, np.sum(outputs.mean(axis=0) ** 2), rtol=1e-4)


def test_layer_error_binary_runs_on_the_tiny_model(tmp_path):
    import json

    from tests import inprocess

    out = tmp_path / "layer_error.json"
    result = inprocess.run("experiments.layer_error", "--config=configs/layer_error.py:runlocal",
                           f"--config.out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["method"] for r in rows} == {"wanda", "wanda+dsnot", "sparsegpt",
                                           "sparsegpt+dsnot"}
    assert len(rows) == 2 * 7 * 4 and all(r["mse"] > 0 for r in rows)


def test_layer_error_binary_prunes_each_variant_by_its_own_group_at_70(tmp_path):
    import json

    from tests import inprocess

    out = tmp_path / "layer_error.json"
    result = inprocess.run("experiments.layer_error",
                           "--config=configs/layer_error.py:70,runlocal", f"--config.out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads(out.read_text())
    assert written["config"]["variants"]["wanda"]["pattern"] == "per_output"
    assert written["config"]["variants"]["sparsegpt+dsnot"]["pattern"] == "unstructured"
    assert all(r["mse"] > 0 for r in written["rows"])


def test_layer_error_binary_quantizes_the_dense_layers_at_int4(tmp_path):
    """With a quantizer each variant's error is the quantized kernel's; GPTQ, which minimises
    that error on the same calibration inputs, beats round-to-nearest on every layer."""
    import json

    from tests import inprocess

    out = tmp_path / "layer_error.json"
    result = inprocess.run("experiments.layer_error",
                           "--config=configs/layer_error.py:int4,runlocal", f"--config.out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    mse = {(r["block"], r["layer"], r["method"]): r["mse"] for r in rows}
    layers = {(r["block"], r["layer"]) for r in rows}
    assert len(layers) == 2 * 7 and all(v > 0 for v in mse.values())
    assert all(mse[(*key, "gptq")] < mse[(*key, "rtn")] for key in layers)


def test_layer_error_refuses_a_method_that_cannot_prune_by_its_pattern_before_loading():
    from tests import inprocess

    result = inprocess.run("experiments.layer_error", "--config=configs/layer_error.py:runlocal",
                           "--config.pattern=per_output", "--config.sparsity=0.7",
                           "--config.model=no-such-model")
    assert result.returncode != 0
    assert ("config.variants.sparsegpt: method 'sparsegpt' chooses its unstructured mask per "
            "block of columns; pattern must be 'unstructured' or N:M, got 'per_output'"
            in result.stderr), result.stderr[-2000:]


def test_layer_errors_refuses_a_variant_its_method_cannot_prune_before_any_work():
    from jaxprune.oneshot import diagnostics

    good = oneshot.settings_from_config(oneshot_fields(method="wanda", pattern="per_output"))
    bad = oneshot.settings_from_config(oneshot_fields(method="sparsegpt", pattern="per_output"))
    with pytest.raises(ValueError, match="variant 'sgpt': method 'sparsegpt' chooses"):
        # No model: the check must come before any use of it.
        diagnostics.layer_errors(None, np.ones((1, 4), np.int32),
                                 {"wanda": good, "sgpt": bad}, blocks=[0])
