"""``prune``: the composed call on dict and Flax NNX trees, jit parity, errors before work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune as jp


class TinyMLP(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(32, 16, rngs=rngs)
        self.up = nnx.Linear(16, 64, rngs=rngs)
        self.down = nnx.Linear(64, 16, rngs=rngs)
        self.norm = nnx.RMSNorm(16, rngs=rngs)

    def __call__(self, tokens):
        h = self.embed(tokens)
        return self.norm(h + self.down(jax.nn.gelu(self.up(h))))


@pytest.mark.parametrize("pattern", ["unstructured", "per_output", "global", "2:4", "4:8"])
def test_prune_nnx_state_jit_matches_eager(pattern):
    model = TinyMLP(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    sparsity = None if ":" in pattern else 0.75
    masks = jp.prune(params, jp.magnitude, sparsity, pattern=pattern)
    jitted = jax.jit(lambda p: jp.prune(p, jp.magnitude, sparsity, pattern=pattern))(params)
    report = jp.sparsity_report(params, masks)
    masked = {row.path for row in report.rows if row.masked}
    assert masked == {"up/kernel", "down/kernel"}
    expected = 0.5 if pattern in ("2:4", "4:8") else 0.75
    assert report.masked_sparsity == pytest.approx(expected, abs=1e-9)
    for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(a, b)
    # The masked state goes back into the model and the model still runs.
    nnx.update(model, jp.apply_masks(params, masks))
    zeros = sum(int(jnp.sum(k[...] == 0)) for k in (model.up.kernel, model.down.kernel))
    assert zeros == round(expected * 2 * 16 * 64)
    assert model(jnp.arange(8)).shape == (8, 16)


def test_prune_with_erk_and_overrides():
    params = {"a": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4)},
              "b": {"kernel": jnp.arange(1.0, 4097.0).reshape(64, 64)},
              "lm_head": {"kernel": jnp.arange(1.0, 9.0).reshape(4, 2)}}
    masks = jp.prune(params, sparsity=0.9, allocate="erk", overrides={"lm_head": 0.5})
    assert bool(jnp.all(masks["a"]["kernel"]))  # ERK leaves the small layer dense
    assert int(masks["lm_head"]["kernel"].sum()) == 4


class CountingCriterion:
    """Records whether scoring started, to show that errors come before any work."""

    def __init__(self):
        self.calls = 0

    def __call__(self, params, stats=None):
        self.calls += 1
        return jp.magnitude(params, stats)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(sparsity=1.0), ValueError, r"sparsity must be in \[0, 1\)"),
        (dict(sparsity=-0.2), ValueError, r"sparsity must be in \[0, 1\)"),
        (dict(sparsity=None), ValueError, "sparsity is required for pattern 'per_tensor'"),
        (dict(pattern="4:4"), ValueError, "N < M"),
        (dict(pattern="-2:4"), ValueError, "N >= 0"),
        (dict(pattern="2:8", sparsity=0.5), ValueError, "pattern 2:8 implies 0.75"),
        (dict(pattern="4:32", sparsity=None), ValueError, "divisible by M=32"),
        (dict(overrides={"attention": 0.3}), ValueError, "'attention' matches no parameter"),
        (dict(allocate="owl"), ValueError, "allocate must be one of"),
        (dict(sparsity={"w": {"kernel": 0.5}}), ValueError, "missing from sparsity"),
        (dict(pattern="per_output", overrides={"bias": 0.5}), ValueError,
         "'per_output' needs a kernel of rank >= 2"),
    ],
)
def test_bad_input_fails_before_scoring(kwargs, error, message):
    params = {"w": {"kernel": jnp.arange(1.0, 49.0).reshape(16, 3), "bias": jnp.ones(3)},
              "v": {"kernel": jnp.arange(1.0, 33.0).reshape(16, 2)}}
    criterion = CountingCriterion()
    args = dict(sparsity=0.5) | kwargs
    with pytest.raises(error, match=message):
        jp.prune(params, criterion, **args)
    assert criterion.calls == 0


def test_nan_scores_are_refused_naming_the_leaf():
    params = {"w": jnp.array([[1.0, 2.0], [jnp.nan, 4.0]])}
    with pytest.raises(ValueError, match="scores at 'w' contain NaN"):
        jp.prune(params, jp.magnitude, 0.5, include=lambda path, leaf: True)
