"""Every job on every family: one-shot pruning (every method, N:M, OWL), structured surgery,
distillation, sparse training, evaluation and export, on tiny random Llama 3.2 (llama3 RoPE,
tied), Mistral (windows), Qwen2 (q/k/v biases), Qwen3 (q/k norms) and Gemma 3 models. Parity
with transformers, family by family, is in tests/test_llama_parity.py; the cached decoder and
the zero-shot scorer have their own per-family tests (test_decode.py, test_zeroshot.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune as jp
from jaxprune import models, oneshot, structured, training
from jaxprune.eval import perplexity
from tests import lazy
from tests.families import FAMILIES, tiny_model
from tests.test_oneshot import settings

torch = lazy.LazyModule("torch")
transformers = lazy.LazyModule("transformers")

SEGMENTS = np.random.default_rng(0).integers(0, 64, (4, 12))


def kernel_masks_hold(result, pattern):
    """Every pruned layer's weights are zero where its mask is, and the masks follow the
    pattern; 14 layers (7 per block) are masked."""
    masked = 0
    for (path, weight), (_, mask) in zip(
            jp.paths.leaves_with_paths(nnx.state(result.model)),
            jp.paths.leaves_with_paths(result.masks, keep_none=True), strict=True):
        if mask is not None:
            masked += 1
            assert np.all(np.asarray(weight)[~np.asarray(mask)] == 0), path
    assert masked == 14
    if ":" in pattern:
        jp.check_n_of_m_masks(result.masks, pattern)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_shot_methods_patterns_and_owl(family):
    model = tiny_model(family)
    runs = [("sparsegpt", "2:4", "uniform"), ("wanda", "per_output", "owl")]
    if family == "gemma3":  # every method on the family furthest from Llama
        runs += [(m, "4:8", "uniform") for m in oneshot.registry.METHODS
                 if m not in ("sparsegpt", "wanda")]
    for method, pattern, allocation in runs:
        config = settings(method=method, pattern=pattern, allocation=allocation, sparsity=0.5,
                          batch_size=2, blocksize=16)
        result = oneshot.prune_oneshot(model, SEGMENTS, config, progress=False)
        kernel_masks_hold(result, pattern)
        assert bool(jnp.all(jnp.isfinite(result.model(jnp.asarray(SEGMENTS)))))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_structured_cuts_by_every_criterion_kind(family):
    model = tiny_model(family)
    importance = structured.activation_importance(model, SEGMENTS, batch_size=2)
    plan = structured.plan_width(model.config, importance, heads_per_group=1, mlp_channels=40,
                                 hidden=24)
    cut = structured.cut_width(model, plan)
    assert cut.config.num_heads == (2, 2) and cut.config.hidden_size == 24
    depth = structured.cut_depth(model, structured.plan_depth(
        structured.block_influence(model, SEGMENTS, batch_size=2), 1))
    fused = structured.fuse_blocks(model, 0)
    for net in (cut, depth, fused):
        count = sum(x.size for x in jax.tree.leaves(nnx.state(net, nnx.Param)))
        assert count == net.config.num_params()
        assert np.isfinite(perplexity(net, SEGMENTS.ravel(), window=12, progress=False,
                                      bos_id=1).perplexity)
    # The kept block keeps its own window (and so, for Gemma, its own RoPE table).
    removed = depth.config.num_layers == 1 and set(range(2)) - set(
        [b for b in range(2) if depth.config.attention_windows[0] ==
         model.config.attention_windows[b]])
    assert depth.config.num_layers == 1 and removed is not None


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_distillation_and_sparse_training_steps(family):
    model = tiny_model(family)
    tokens = np.random.default_rng(1).integers(0, 64, 400)
    settings = training.TrainSettings(steps=3, batch_size=2, seq_len=12, learning_rate=1e-2,
                                      warmup_steps=0, log_every=1)
    student = structured.remove_blocks(model, [1])
    distilled, curve = training.distill(student, model, tokens, settings)
    assert len(curve) == 3 and all(np.isfinite(loss) for _, loss in curve)
    rule = training.rule_from_config("gradual", _sparsity_section())
    trainer = training.Trainer(model, tokens, settings, rule=rule)
    curve = trainer.run(until=settings.steps)
    assert len(curve) == 3 and trainer.sparsity() == pytest.approx(0.5, abs=0.01)


def _sparsity_section():
    import ml_collections

    return ml_collections.ConfigDict({"final": 0.5, "begin": 0, "end": 2, "update_every": 1,
                                      "drop_fraction": 0.3, "allocation": "uniform",
                                      "pattern": "unstructured"})


@pytest.mark.parametrize("family", ["gemma3", "qwen3"])
def test_pruned_and_cut_exports_keep_zeros_and_shapes_in_transformers(tmp_path, family):
    """A 2:4 model and a uniform structured cut, exported and read by transformers: the same
    logits, every zero still zero, the cut shapes in transformers' config."""
    model = tiny_model(family)
    config = settings(method="wanda", pattern="2:4", sparsity=0.5, batch_size=2)
    pruned = oneshot.prune_oneshot(model, SEGMENTS, config, progress=False).model
    cut = structured.prune_width(model, kv_groups={0: [1], 1: [0]},
                                 mlp_channels={b: list(range(0, 48, 2)) for b in range(2)})
    tokens = np.random.default_rng(2).integers(0, 64, (2, 14))
    for name, net in (("pruned", pruned), ("cut", cut)):
        models.save_hf_dir(net, str(tmp_path / name))
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / name).eval()
        with torch.no_grad():
            logits = theirs(torch.as_tensor(tokens)).logits.numpy()
        ours = np.asarray(net(jnp.asarray(tokens)))
        np.testing.assert_allclose(logits, ours, rtol=1e-5, atol=1e-5 * np.abs(ours).max())
        state = dict(jp.paths.leaves_with_paths(nnx.state(net, nnx.Param)))
        for key, weight in theirs.state_dict().items():
            if key.endswith("proj.weight"):
                path = key.replace("model.", "", 1).replace(".", "/").replace("weight", "kernel")
                np.testing.assert_array_equal(weight.numpy() == 0,
                                              np.asarray(state[path]).T == 0)
    assert theirs.config.num_key_value_heads == 1 and theirs.config.intermediate_size == 24
