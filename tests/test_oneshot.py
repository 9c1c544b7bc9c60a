"""The block-by-block one-shot engine on a tiny model, and the OBD/Wanda identity."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune import models, oneshot
from tests.oneshot_fields import oneshot_fields

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)


@pytest.fixture(scope="module")
def tiny():
    return models.Llama(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def segments():
    return np.random.default_rng(0).integers(0, CONFIG.vocab_size, (6, 16))


def settings(**fields):
    """One-shot settings from config-style fields (names for the method and the allocation),
    through the same conversion the binaries use."""
    defaults = {f.name: f.default for f in dataclasses.fields(oneshot.OneShotConfig)
                if f.name in oneshot.registry.plain_fields()}
    return oneshot.settings_from_config(oneshot_fields(**defaults) | fields)


# Every method in the comparison group of its paper and at 2:4; 4:8 (the same code with M=8)
# for the two methods whose N:M path differs (selection groups, SparseGPT's column groups).
PAPER_GROUP = {"magnitude": "unstructured", "obd": "unstructured", "obd_fisher": "unstructured",
               "wanda": "per_output", "ria": "per_output", "sparsegpt": "unstructured"}
CASES = [(m, p) for m in oneshot.registry.METHODS
         for p in (PAPER_GROUP.get(m, "unstructured"), "2:4")]
CASES += [("wanda", "4:8"), ("sparsegpt", "4:8"), ("magnitude", "per_output")]


@pytest.mark.parametrize("method, pattern", CASES)
def test_engine_prunes_every_linear_layer_exactly(tiny, segments, method, pattern):
    nm = ":" in pattern
    config = settings(method=method, pattern=pattern, sparsity=None if nm else 0.5,
                      batch_size=4, blocksize=16)
    result = oneshot.prune_oneshot(tiny, segments, config, progress=False)
    report = jp.sparsity_report(nnx.state(result.model), result.masks)
    masked = [row for row in report.rows if row.masked]
    assert len(masked) == 14  # 7 linear layers x 2 blocks; no embedding, norm or head
    for row in masked:
        assert row.sparsity == 0.5, row.path  # every kernel here has an even group size
    if nm:
        jp.check_n_of_m_masks(result.masks, pattern)
    # Pruned weights are exactly zero; the input model is untouched.
    for (path, weight), (_, mask) in zip(
            jp.paths.leaves_with_paths(nnx.state(result.model)),
            jp.paths.leaves_with_paths(result.masks, keep_none=True), strict=True):
        if mask is not None:
            assert np.all(np.asarray(weight)[~np.asarray(mask)] == 0), path
    original = nnx.state(tiny, nnx.Param)["layers"][0]["mlp"]["up_proj"]["kernel"][...]
    assert float(jnp.mean(original == 0)) == 0.0
    logits = result.model(jnp.asarray(segments[:1]))
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_obd_with_gram_diagonal_equals_wanda_in_the_engine(tiny, segments):
    for pattern in ("per_output", "unstructured", "2:4"):
        runs = [oneshot.prune_oneshot(tiny, segments, settings(
            method=method, pattern=pattern, sparsity=None if ":" in pattern else 0.6),
            progress=False) for method in ("obd", "wanda")]
        for a, b in zip(jax.tree.leaves(runs[0].masks), jax.tree.leaves(runs[1].masks),
                        strict=True):
            np.testing.assert_array_equal(a, b)


@given(st.integers(0, 2**31 - 1), st.sampled_from(["per_output", "unstructured", "2:4", "1:4"]),
       st.sampled_from([0.3, 0.5, 0.8]))
def test_obd_and_wanda_rank_alike(seed, pattern, sparsity):
    """w^2 ||x||^2 is the square of |w| ||x||: the same order in every comparison group."""
    rng = np.random.default_rng(seed)
    kernel = jnp.asarray(rng.standard_normal((16, 12)), jnp.float32)
    sq_norms = jnp.asarray(rng.exponential(size=16) ** 2, jnp.float32)
    s = None if ":" in pattern else sparsity
    wanda = jp.select_masks({"w": jp.criteria.wanda_score(kernel, sq_norms)},
                            s if s is not None else jp.parse_pattern(pattern).sparsity, pattern)
    obd = jp.select_masks({"w": jp.criteria.obd_score(kernel, sq_norms)},
                          s if s is not None else jp.parse_pattern(pattern).sparsity, pattern)
    np.testing.assert_array_equal(wanda["w"], obd["w"])


def test_dense_order_matches_sequential_on_the_first_block_only(tiny, segments):
    runs = {order: oneshot.prune_oneshot(tiny, segments, settings(
        method="wanda", order=order), progress=False) for order in ("sequential", "dense")}
    first = "layers/0/mlp/down_proj/kernel"
    second = "layers/1/mlp/down_proj/kernel"
    masks = {o: dict(jp.paths.leaves_with_paths(r.masks)) for o, r in runs.items()}
    np.testing.assert_array_equal(masks["sequential"][first], masks["dense"][first])
    assert not np.array_equal(masks["sequential"][second], masks["dense"][second])


def test_owl_allocation_averages_the_target(tiny, segments):
    result = oneshot.prune_oneshot(tiny, segments, settings(
        method="wanda", allocation="owl", owl_lambda=0.1, owl_m=2.0), progress=False)
    values = list(result.block_sparsity.values())
    assert np.mean(values) == pytest.approx(0.5) and max(values) - min(values) == pytest.approx(0.2)


def test_owl_sparsities_formula():
    # Ratios scaled to [0, 2 lambda] and centred on the target density.
    assert oneshot.owl_sparsities([0.01, 0.03, 0.02], 0.7, 0.08) == pytest.approx(
        [0.78, 0.62, 0.70])


def test_input_stats_are_sums_over_batches():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 10, 6)).astype(np.float32)
    total = None
    for part in (x[:1], x[1:]):
        total = oneshot.add_input_stats(
            total, oneshot.batch_input_stats(jnp.asarray(part), with_gram=True))
    flat = x.reshape(-1, 6).astype(np.float64)
    np.testing.assert_allclose(total.gram, flat.T @ flat, rtol=1e-5)
    np.testing.assert_allclose(total.sq_norms, (flat**2).sum(0), rtol=1e-5)
    assert int(total.count) == 30


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(sparsity=1.0), ValueError, r"sparsity must be in \[0, 1\)"),
    (dict(sparsity=-0.1), ValueError, r"sparsity must be in \[0, 1\)"),
    (dict(method="sparsegpt", pattern="3:3", sparsity=None), ValueError, "N < M"),
    (dict(pattern="2:4", sparsity=0.6), ValueError, "disagrees with pattern 2:4"),
    (dict(method="sparsegpt", pattern="2:4", sparsity=None, blocksize=30), ValueError,
     "multiple of M=4"),
    (dict(method="sparsegpt", pattern="unstructured", damp=0.0), ValueError,
     r"damp must be in \(0, 1\]"),
    (dict(method="sparsegpt", pattern="per_output"), ValueError, "per block of columns"),
    (dict(method="wanda", pattern="global"), ValueError, "without calibration statistics"),
    (dict(layers="attention/query"), ValueError, "matches no prunable kernel"),
    (dict(layers="embed_tokens"), ValueError, "not the kernel of a block's linear layer"),
    (dict(method="sparse"), ValueError,
     r"config.method='sparse' is not one of \['alps', 'magnitude'"),
    (dict(order="random"), ValueError, "order must be one of"),
    (dict(allocation="owl", pattern="2:4", sparsity=None), ValueError, "allocation OWL sets"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(method="magnitude", allocation="owl"), ValueError, "collects none"),
])
def test_bad_settings_fail_before_any_work(tiny, segments, kwargs, error, message):
    with pytest.raises(error, match=message):
        oneshot.plan_oneshot(tiny, segments, settings(**kwargs))


def test_bad_calibration_data(tiny):
    with pytest.raises(ValueError, match=r"must be \[N >= 1, L >= 2\]"):
        oneshot.plan_oneshot(tiny, np.zeros((4,), np.int32), oneshot.OneShotConfig())
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 64\)"):
        oneshot.plan_oneshot(tiny, np.full((2, 8), 64), oneshot.OneShotConfig())


def test_custom_criterion_runs_through_the_engine(tiny, segments):
    # (|w| ||x||)^2 orders every group as Wanda does, so the masks must be Wanda's; a
    # criterion that ignores the inputs (|w|, per output) must give magnitude's masks instead.
    def squared_wanda(kernel, stats):
        return kernel.astype(jnp.float32) ** 2 * stats.sq_norms[:, None]

    for pattern in ("per_output", "2:4"):
        sparsity = None if ":" in pattern else 0.6
        custom = oneshot.prune_oneshot(tiny, segments, oneshot.OneShotConfig(
            method=oneshot.ScoreMethod(squared_wanda), pattern=pattern, sparsity=sparsity),
            progress=False)
        wanda = oneshot.prune_oneshot(tiny, segments, oneshot.OneShotConfig(
            method=oneshot.WANDA, pattern=pattern, sparsity=sparsity), progress=False)
        for a, b in zip(jax.tree.leaves(custom.masks), jax.tree.leaves(wanda.masks),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    by_weight = oneshot.prune_oneshot(tiny, segments, oneshot.OneShotConfig(
        method=oneshot.ScoreMethod(lambda kernel, stats: jnp.abs(kernel))), progress=False)
    magnitude = oneshot.prune_oneshot(tiny, segments, oneshot.OneShotConfig(
        method=oneshot.MAGNITUDE), progress=False)
    for a, b in zip(jax.tree.leaves(by_weight.masks), jax.tree.leaves(magnitude.masks),
                    strict=True):
        np.testing.assert_array_equal(a, b)


class RecordingWanda:
    """A method written from scratch against the protocol (no jaxprune base class), as a
    notebook user would: it records what the engine hands it, then prunes as Wanda."""

    statistic = oneshot.INPUT_NORMS

    def __init__(self):
        self.seen = []

    def check(self, pattern):
        del pattern

    def prune_layer(self, kernel, statistic, *, sparsity, pattern, path):
        self.seen.append((path, np.asarray(statistic.sq_norms)))
        return oneshot.WANDA.prune_layer(kernel, statistic, sparsity=sparsity, pattern=pattern,
                                         path=path)


def test_user_method_gets_wandas_calibration_in_wandas_order(tiny, segments):
    recording = RecordingWanda()
    mine = oneshot.prune_oneshot(tiny, segments, oneshot.OneShotConfig(method=recording),
                                 progress=False)
    wanda = oneshot.prune_oneshot(tiny, segments, oneshot.OneShotConfig(), progress=False)
    assert [path for path, _ in recording.seen] == [row["path"] for row in wanda.layers]
    assert [row["path"] for row in mine.layers] == [row["path"] for row in wanda.layers]
    # The statistics are those of the pruned prefix (sequential order), as Wanda's: block 1's
    # inputs differ from the dense model's once block 0 is pruned; block 0's are the same.
    dense_order = RecordingWanda()
    oneshot.prune_oneshot(tiny, segments, oneshot.OneShotConfig(method=dense_order,
                                                                order="dense"), progress=False)
    sequential, dense = dict(recording.seen), dict(dense_order.seen)
    np.testing.assert_array_equal(sequential["layers/0/mlp/up_proj/kernel"],
                                  dense["layers/0/mlp/up_proj/kernel"])
    assert not np.array_equal(sequential["layers/1/mlp/up_proj/kernel"],
                              dense["layers/1/mlp/up_proj/kernel"])
    for a, b in zip(jax.tree.leaves(mine.masks), jax.tree.leaves(wanda.masks), strict=True):
        np.testing.assert_array_equal(a, b)
    for (_, a), (_, b) in zip(jp.paths.leaves_with_paths(nnx.state(mine.model)),
                              jp.paths.leaves_with_paths(nnx.state(wanda.model)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_custom_criterion_bad_input(tiny, segments):
    with pytest.raises(TypeError, match="must be a one-shot method value"):
        oneshot.plan_oneshot(tiny, segments, oneshot.OneShotConfig(method="wanda"))
    with pytest.raises(ValueError, match=r"method 'custom' on 'layers/0/.*': score_fn returned "
                                         r"scores of shape \(\d+,\) for a kernel of shape "
                                         r"\(\d+, \d+\)"):
        oneshot.prune_oneshot(tiny, segments, oneshot.OneShotConfig(method=oneshot.ScoreMethod(
            lambda kernel, stats: stats.sq_norms)), progress=False)
    with pytest.raises(FloatingPointError, match="custom scores of 'layers/0/.*' contain NaN"):
        oneshot.prune_oneshot(tiny, segments, oneshot.OneShotConfig(method=oneshot.ScoreMethod(
            lambda kernel, stats: jnp.log(kernel))), progress=False)
