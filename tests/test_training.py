"""Pruning during training: schedules, exact zeros, drop and grow, straight-through, NNX."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from jaxprune import models, training
from tests import budget


def mlp_params(seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"up": {"kernel": jax.random.normal(k1, (24, 40))},
            "down": {"kernel": jax.random.normal(k2, (40, 12)), "bias": jnp.ones(12)}}


def mlp_loss(params, x):
    hidden = jnp.tanh(x @ params["up"]["kernel"])
    return jnp.mean((hidden @ params["down"]["kernel"] + params["down"]["bias"] - 1.0) ** 2)


def batch(step):
    return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(7), step), (8, 24))


def make_step(tx):
    def step(params, state, x):
        grads = jax.grad(mlp_loss)(params, x)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, grads
    return step


def zhu_gupta_reference(step, initial, final, begin, end, every, power=3):
    """Equation (1) of Zhu & Gupta in float64, the value of the last update step."""
    if step < begin:
        return initial
    last = min(begin + (step - begin) // every * every, end)
    return final + (initial - final) * (1 - (last - begin) / (end - begin)) ** power


def kernels(tree):
    return {name: np.asarray(tree[name]["kernel"]) for name in ("up", "down")}


def test_cubic_schedule_reaches_the_target_exactly_and_keeps_pruned_weights_zero():
    rule = training.GradualMagnitude(final_sparsity=0.8, begin=10, end=90, update_every=10)
    tx = training.sparse_training(optax.adam(1e-2), rule)
    params = mlp_params()
    state = tx.init(params)
    step = jax.jit(make_step(tx))
    previous = None
    for t in range(120):
        params, state, _ = step(params, state, batch(t))
        allowed = zhu_gupta_reference(t, 0.0, 0.8, 10, 90, 10)
        masks = kernels(state.masks)
        for name, weight in kernels(params).items():
            mask = masks[name]
            pruned = mask.size - mask.sum()
            # Never more than the schedule allows; exactly the floor of it at update steps.
            assert pruned == math.floor(allowed * mask.size + 1e-6), (t, name)
            assert np.all(weight[~mask] == 0.0), (t, name)  # exactly zero, after apply_updates
            if previous is not None:
                assert not np.any(mask & ~previous[name]), "a pruned weight came back"
        assert state.masks["down"]["bias"] is None  # biases stay dense
        previous = masks
    assert all(m.size - m.sum() == math.floor(0.8 * m.size) for m in previous.values())
    assert float(training.masked_fraction(state)) == pytest.approx(0.8, abs=1 / 960)


def test_jit_and_eager_agree():
    rule = training.GradualMagnitude(final_sparsity=0.5, begin=0, end=4, update_every=2)
    tx = training.sparse_training(optax.sgd(0.1), rule)
    results = []
    for fn in (make_step(tx), jax.jit(make_step(tx))):
        params, state = mlp_params(), tx.init(mlp_params())
        for t in range(6):
            params, state, _ = fn(params, state, batch(t))
        results.append((params, state.masks))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        if a.dtype == bool:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def adam_moments(state):
    inner = state.inner_state
    adam = inner[0] if isinstance(inner, tuple) and not hasattr(inner, "mu") else inner
    return adam.mu, adam.nu


@pytest.mark.parametrize("rule_class", [training.RigL, training.SET])
def test_drop_and_grow_keeps_sparsity_and_starts_grown_weights_at_zero(rule_class):
    rule = rule_class(sparsity=0.75, update_every=5, end=60, drop_fraction=0.3)
    tx = training.sparse_training(optax.adam(1e-2), rule, key=jax.random.PRNGKey(3))
    params = mlp_params()
    state = tx.init(params)
    step = jax.jit(make_step(tx))
    grown_total = 0
    for t in range(40):
        old_masks = kernels(state.masks)
        params, state, _ = step(params, state, batch(t))
        masks = kernels(state.masks)
        mu, nu = adam_moments(state)
        for name, mask in masks.items():
            assert mask.size - mask.sum() == math.floor(0.75 * mask.size)  # constant
            weight = np.asarray(params[name]["kernel"])
            assert np.all(weight[~mask] == 0.0)
            grown = mask & ~old_masks[name]
            assert grown.sum() == (old_masks[name] & ~mask).sum()  # as many grown as dropped
            if t % 5 == 0 and t > 0:
                assert grown.sum() > 0, (t, name)
            grown_total += grown.sum()
            assert np.all(weight[grown] == 0.0)  # regrown weights start at zero
            assert np.all(np.asarray(mu[name]["kernel"])[grown] == 0.0)
            assert np.all(np.asarray(nu[name]["kernel"])[grown] == 0.0)
            if t % 5 != 0:
                assert grown.sum() == 0
    assert grown_total > 0


def test_rigl_grows_where_the_gradient_is_largest():
    """One update step against a NumPy reference of drop and grow."""
    rule = training.RigL(sparsity=0.5, update_every=1, end=10, drop_fraction=0.25,
                         drop_schedule="constant")
    params = mlp_params()
    masks = rule.init_masks(params, jax.random.PRNGKey(0))
    grads = jax.grad(mlp_loss)(params, batch(0))
    new = rule.update_masks(masks, params, grads, jnp.int32(1), jax.random.PRNGKey(1))
    for name in ("up", "down"):
        m = np.asarray(masks[name]["kernel"]).ravel()
        w = np.abs(np.asarray(params[name]["kernel"], np.float64)).ravel()
        g = np.abs(np.asarray(grads[name]["kernel"], np.float64)).ravel()
        k = int(np.floor(0.25 * m.sum()))
        active = np.flatnonzero(m)
        dropped = active[np.argsort(w[active], kind="stable")[:k]]
        after = m.copy()
        after[dropped] = False
        candidates = np.flatnonzero(~after)
        grown = candidates[np.argsort(-g[candidates], kind="stable")[:k]]
        expected = after.copy()
        expected[grown] = True
        np.testing.assert_array_equal(np.asarray(new[name]["kernel"]).ravel(), expected)


def test_set_growth_depends_on_the_key():
    rule = training.SET(sparsity=0.5, update_every=1, end=10)
    params = mlp_params()
    masks = rule.init_masks(params, jax.random.PRNGKey(0))
    grads = jax.grad(mlp_loss)(params, batch(0))
    a = rule.update_masks(masks, params, grads, jnp.int32(1), jax.random.PRNGKey(1))
    b = rule.update_masks(masks, params, grads, jnp.int32(1), jax.random.PRNGKey(1))
    c = rule.update_masks(masks, params, grads, jnp.int32(1), jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a["up"]["kernel"], b["up"]["kernel"])
    assert np.any(np.asarray(a["up"]["kernel"]) != np.asarray(c["up"]["kernel"]))


def test_straight_through_feeds_dense_gradients_to_pruned_weights():
    rule = training.GradualMagnitude(final_sparsity=0.6, begin=0, end=20, update_every=5,
                                     straight_through=True)
    tx = training.sparse_training(optax.sgd(0.05), rule)
    params = mlp_params()
    state = tx.init(params)
    step = jax.jit(make_step(tx))
    came_back = 0
    for t in range(30):
        before_dense = kernels(state.dense_params)
        old = kernels(state.masks)
        params, state, grads = step(params, state, batch(t))
        masks = kernels(state.masks)
        for name, mask in masks.items():
            assert np.all(np.asarray(params[name]["kernel"])[~mask] == 0.0)
            dense = kernels(state.dense_params)[name]
            g = np.asarray(grads[name]["kernel"])
            # The dense weights move by the dense gradient, pruned or not (SGD: -lr * g).
            np.testing.assert_allclose(dense - before_dense[name], -0.05 * g, rtol=1e-4,
                                       atol=1e-6)
            came_back += int(np.sum(mask & ~old[name]))
    assert came_back > 0  # masks are recomputed from dense magnitudes, so weights return


def test_snip_masks_follow_the_saliency_of_the_first_gradient():
    rule = training.Snip(sparsity=0.7)
    tx = training.sparse_training(optax.sgd(0.1), rule)
    params = mlp_params()
    state = tx.init(params)
    grads = jax.grad(mlp_loss)(params, batch(0))
    new_params, state, _ = jax.jit(make_step(tx))(params, state, batch(0))
    for name in ("up", "down"):
        saliency = np.abs(np.asarray(params[name]["kernel"], np.float64) *
                          np.asarray(grads[name]["kernel"], np.float64)).ravel()
        expected = np.ones(saliency.size, bool)
        expected[np.argsort(saliency, kind="stable")[:math.floor(0.7 * saliency.size)]] = False
        np.testing.assert_array_equal(np.asarray(state.masks[name]["kernel"]).ravel(), expected)
    fixed = kernels(state.masks)
    for t in range(1, 5):
        new_params, state, _ = jax.jit(make_step(tx))(new_params, state, batch(t))
    for name, mask in kernels(state.masks).items():
        np.testing.assert_array_equal(mask, fixed[name])


def test_works_with_nnx_optimizer_on_a_llama():
    model, _ = models.load("tiny-llama")
    rule = training.GradualMagnitude(final_sparsity=0.5, begin=0, end=4, update_every=2)
    optimizer = nnx.Optimizer(model, training.sparse_training(optax.adam(1e-3), rule),
                              wrt=nnx.Param)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 32), 0, 256)

    @nnx.jit
    def train_step(model, optimizer, tokens):
        def loss_fn(model):
            logits = model(tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    for _ in range(6):
        train_step(model, optimizer, tokens)
    kernel = np.asarray(model.layers[0].mlp.up_proj.kernel[...])
    assert np.mean(kernel == 0.0) == pytest.approx(0.5, abs=1e-3)
    embedding = np.asarray(model.embed_tokens.embedding[...])
    assert np.mean(embedding == 0.0) == 0.0  # embeddings stay dense


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: training.GradualMagnitude(0.8, begin=90, end=10, update_every=10),
         "the schedule's end must come after its begin, got begin=90, end=10"),
        (lambda: training.GradualMagnitude(0.8, begin=10, end=90, update_every=0),
         "update_every must be >= 1, got 0"),
        (lambda: training.GradualMagnitude(1.0, begin=10, end=90, update_every=10),
         "final_sparsity must be in [0, 1)"),
        (lambda: training.GradualMagnitude(-0.1, begin=10, end=90, update_every=10),
         "final_sparsity must be in [0, 1)"),
        (lambda: training.GradualMagnitude(0.5, 0, 10, 1, pattern="2:4"),
         "an N:M pattern has one fixed sparsity"),
        (lambda: training.RigL(sparsity=1.2, update_every=10, end=100), "sparsity must be in"),
        (lambda: training.RigL(sparsity=0.5, update_every=0, end=100),
         "update_every must be >= 1"),
        (lambda: training.RigL(sparsity=0.5, update_every=10, end=100, drop_fraction=0.0),
         "drop_fraction must be in (0, 1]"),
        (lambda: training.Snip(0.3, pattern="2:4"), "pattern 2:4 means sparsity 0.5"),
        (lambda: training.sparse_training(optax.sgd(0.1), training.SET(0.5, 10, 100)),
         "SET draws random masks; pass key="),
    ],
)
def test_bad_arguments_are_refused_with_clear_errors(make, message):
    with pytest.raises((TypeError, ValueError)) as error:
        make()
    assert message in str(error.value)


@budget.compiling(0.125)
@given(rows=st.integers(2, 12), cols=st.integers(1, 9), sparsity=st.floats(0.05, 0.95),
       fraction=st.floats(0.01, 1.0), seed=st.integers(0, 2**16))
def test_drop_and_grow_invariants(rows, cols, sparsity, fraction, seed):
    """Any shape, sparsity and drop fraction: the count is kept, exactly the floor moves."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {"w": {"kernel": jax.random.normal(keys[0], (rows, cols))}}
    grads = {"w": {"kernel": jax.random.normal(keys[1], (rows, cols))}}
    rule = training.RigL(sparsity=sparsity, update_every=1, end=100, drop_fraction=fraction,
                         drop_schedule="constant")
    masks = rule.init_masks(params, keys[2])
    old = np.asarray(masks["w"]["kernel"])
    assert old.size - old.sum() == math.floor(sparsity * old.size + 1e-6)
    new = np.asarray(rule.update_masks(masks, params, grads, jnp.int32(1), keys[2])["w"]["kernel"])
    assert new.sum() == old.sum()
    moved = int((old & ~new).sum())
    assert moved <= math.floor(np.float32(fraction) * np.float32(old.sum()))
    assert int((new & ~old).sum()) == moved
