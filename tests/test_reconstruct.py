"""Block reconstruction: pruned weights stay exactly zero, the masks are the method's, the block
error falls, a step is the same under jit and eagerly, and bad settings are refused first."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune import masks, models, oneshot, paths
from jaxprune.oneshot import reconstruct
from tests.jit_check import assert_jit_matches_eager
from tests.oneshot_fields import oneshot_fields

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)
NAMES = ("self_attn/q_proj", "self_attn/o_proj", "mlp/up_proj", "mlp/down_proj")


def block_case(seed):
    """Block 0 of a tiny model, its dense outputs on random inputs, and random masks that
    prune the block's kernels (already applied)."""
    model = models.Llama(CONFIG, rngs=nnx.Rngs(seed))
    block = model.layers[0]
    rng = np.random.default_rng(seed)
    inputs = [jnp.asarray(rng.standard_normal((2, 8, CONFIG.hidden_size)), jnp.float32)
              for _ in range(3)]
    cos, sin = model.rope(8)
    targets = [block(h, cos, sin) for h in inputs]
    kept = {}
    for name in NAMES:
        linear = block
        for part in name.split("/"):
            linear = getattr(linear, part)
        kept[name] = jnp.asarray(rng.random(linear.kernel.shape) < 0.5)
        linear.kernel[...] = jnp.where(kept[name], linear.kernel[...], 0.0)
    return block, kept, inputs, targets, cos, sin


def kernel_of(block, name):
    for part in name.split("/"):
        block = getattr(block, part)
    return np.asarray(block.kernel[...])


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 1000), lr=st.sampled_from([1e-3, 3e-2]))
def test_reconstruction_keeps_every_pruned_weight_at_zero_and_lowers_the_error(seed, lr):
    block, kept, inputs, targets, cos, sin = block_case(seed)
    before_kernels = {name: kernel_of(block, name) for name in NAMES}
    before, after = reconstruct.reconstruct_block(
        block, kept, inputs, targets, cos, sin, oneshot.BlockReconstruction(steps=12, lr=lr))
    assert after < before
    for name in NAMES:
        kernel, keep = kernel_of(block, name), np.asarray(kept[name])
        assert np.all(kernel[~keep] == 0), name
        assert np.any(kernel[keep] != before_kernels[name][keep]), name


def test_an_adam_step_under_jit_equals_eager():
    block, kept, inputs, targets, cos, sin = block_case(3)
    graphdef, kernels, rest = reconstruct.split_kernels(block, kept)
    mask_tree = jax.tree_util.tree_map_with_path(
        lambda path, _: kept["/".join(str(k.key) for k in path[:2])], kernels)
    optimizer = optax.adam(1e-3)
    args = (graphdef, optimizer, kernels, optimizer.init(kernels), rest, mask_tree, inputs[0],
            targets[0], cos, sin)
    assert_jit_matches_eager(reconstruct._adam_step, *args)


def test_every_block_of_a_model_reuses_one_compiled_step():
    """Blocks of one structure share the step's compilation (a new optimizer per block used to
    compile it again for each)."""
    reconstruct._adam_step.clear_cache()
    recon = oneshot.BlockReconstruction(steps=2, lr=1e-3)
    for seed in (5, 6):
        reconstruct.reconstruct_block(*block_case(seed), recon)
    assert reconstruct._adam_step._cache_size() == 1


def test_reconstruction_by_config_through_the_engine():
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (4, 16))
    fields = oneshot_fields(pattern="2:4", batch_size=2)
    plain = oneshot.prune_oneshot(model, segments, oneshot.settings_from_config(fields),
                                  progress=False)
    settings_ = oneshot.settings_from_config(
        fields | {"reconstruction": "adam", "recon_steps": 6, "recon_lr": 1e-3})
    assert settings_.reconstruction == oneshot.BlockReconstruction(6, 1e-3)
    refit = oneshot.prune_oneshot(model, segments, settings_, progress=False)
    assert sorted(refit.block_errors) == [0, 1]
    assert all(after < before for before, after in refit.block_errors.values())
    state = nnx.state(refit.model)
    for path, keep in oneshot_masks(refit).items():
        kernel = np.asarray(state_leaf(state, path))
        assert np.all(kernel[~np.asarray(keep)] == 0), path
        assert masks.is_n_of_m(keep, 2, 4), path
    # Block 0's inputs do not depend on any pruning, so its masks are Wanda's own.
    plain_masks = oneshot_masks(plain)
    for path, keep in oneshot_masks(refit).items():
        if path.startswith("layers/0/"):
            np.testing.assert_array_equal(keep, plain_masks[path])


def oneshot_masks(result):
    return {p: m for p, m in paths.leaves_with_paths(result.masks) if m is not None}


def state_leaf(state, path):
    return dict(paths.leaves_with_paths(state))[path]


@pytest.mark.parametrize("overrides,message", [
    ({"recon_steps": 0}, "config.reconstruction='adam': recon_steps must be >= 1, got 0"),
    ({"recon_lr": 0.0}, "config.reconstruction='adam': recon_lr must be a finite number > 0"),
    ({"recon_lr": float("nan")}, "recon_lr must be a finite number > 0, got nan"),
])
def test_bad_reconstruction_settings_are_refused_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        oneshot.settings_from_config(oneshot_fields(reconstruction="adam", **overrides))


def test_reconstruction_refuses_global_selection_and_a_mesh_before_work():
    model = models.Llama(CONFIG, rngs=nnx.Rngs(1))
    segments = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (4, 16))
    for overrides, message in [
            ({"method": "magnitude", "pattern": "global"}, "pattern 'global' prunes every"),
            ({"mesh_data": 2}, "reconstruction runs on one device; mesh 2x1")]:
        fields = oneshot_fields(reconstruction="adam", **overrides)
        with pytest.raises(ValueError, match=message):
            oneshot.prune_oneshot(model, segments, oneshot.settings_from_config(fields),
                                  progress=False)


def test_median_error_cut_is_the_median_of_each_blocks_relative_fall():
    errors = {0: (2.0, 1.0), 1: (4.0, 3.0), 2: (1.0, 0.1)}
    assert oneshot.median_error_cut(errors) == pytest.approx(0.5)  # cuts 0.5, 0.25, 0.9
    assert oneshot.median_error_cut({3: (1.0, 0.8), 4: (1.0, 0.4)}) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="needs at least one reconstructed block"):
        oneshot.median_error_cut({})
    with pytest.raises(ValueError, match="block 1: error before reconstruction must be > 0"):
        oneshot.median_error_cut({0: (1.0, 0.5), 1: (0.0, 0.0)})


def test_the_prune_job_records_the_median_error_cut_of_its_reconstruction():
    """The sweep's rows carry the reconstruction's effect, not only the log."""
    from configs import wanda
    from experiments import common, oneshot_job

    config = common.apply_runlocal(wanda.get_config("runlocal"))
    config.model, config.pattern = "tiny-llama", "2:4"
    config.reconstruction, config.recon_steps, config.recon_lr = "adam", 4, 1e-3
    resources = common.Resources()
    oneshot_job.prepare(config, resources)
    point = oneshot_job.run_point(config, resources)
    cuts = [1 - after / before for before, after in point["result"].block_errors.values()]
    assert len(cuts) == 2 and all(0 < cut < 1 for cut in cuts)
    assert point["metrics"]["recon_error_cut"] == pytest.approx(float(np.median(cuts)))
    config.reconstruction = "none"
    assert "recon_error_cut" not in oneshot_job.run_point(config, resources)["metrics"]
