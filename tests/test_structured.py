"""Structured surgery: cutting what carries nothing leaves the logits unchanged."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxprune import models, structured


def tiny(seed=0):
    config = models.RANDOM_MODELS["tiny-llama"].replace(
        num_layers=3, num_heads=6, num_kv_heads=3, intermediate_size=128)
    return models.Llama(config, rngs=nnx.Rngs(seed))


def logits(model):
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 24), 0, 256)
    return np.asarray(model(tokens))


def zero(variable, index):
    variable[...] = variable[...].at[index].set(0.0)


def count_params(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_cutting_dead_heads_groups_and_channels_keeps_the_logits():
    model = tiny()
    d = model.config.head_dim
    # KV groups read by heads {0, 1}, {2, 3}, {4, 5}. Block 0: heads 1, 3 and 5 (one per group)
    # write nothing; block 1: KV group 2 (heads 4, 5) writes nothing; block 2: MLP channels 3,
    # 7 and 100 write nothing.
    for head in (1, 3, 5):
        zero(model.layers[0].self_attn.o_proj.kernel, slice(head * d, (head + 1) * d))
    zero(model.layers[1].self_attn.o_proj.kernel, slice(4 * d, 6 * d))
    for channel in (3, 7, 100):
        zero(model.layers[2].mlp.down_proj.kernel, channel)
    expected = logits(model)
    cut = structured.prune_width(
        model, heads={0: [0, 2, 4]}, kv_groups={1: [0, 1]},
        mlp_channels={2: [c for c in range(128) if c not in (3, 7, 100)]})
    assert cut.config.num_heads == (3, 4, 6) and cut.config.num_kv_heads == (3, 2, 3)
    assert cut.config.intermediate_size == (128, 128, 125)
    np.testing.assert_allclose(logits(cut), expected, rtol=1e-5, atol=1e-5)
    assert count_params(cut) == cut.config.num_params()
    assert count_params(cut) < count_params(model)


def test_cutting_dead_hidden_channels_keeps_the_logits():
    model = tiny()
    dead = [5, 17, 40, 63]
    zero(model.embed_tokens.embedding, (slice(None), dead))
    for block in model.layers:
        zero(block.self_attn.o_proj.kernel, (slice(None), dead))
        zero(block.mlp.down_proj.kernel, (slice(None), dead))
    expected = logits(model)
    cut = structured.prune_width(model, hidden=[j for j in range(64) if j not in dead])
    assert cut.config.hidden_size == 60
    np.testing.assert_allclose(logits(cut), expected, rtol=1e-5, atol=1e-5)
    assert count_params(cut) == cut.config.num_params()
    # Without the norm rescaling the normalisation changes.
    unscaled = structured.prune_width(model, hidden=[j for j in range(64) if j not in dead],
                                      rescale_norms=False)
    assert not np.allclose(logits(unscaled), expected, rtol=1e-5, atol=1e-5)


def test_removing_a_block_equals_skipping_it():
    model = tiny()
    shallow = structured.remove_blocks(model, [1])
    assert shallow.config.num_layers == 2
    tokens = jax.random.randint(jax.random.PRNGKey(2), (1, 16), 0, 256)
    h = model.embed(tokens)
    for index in (0, 2):
        h = model.block(index, h)
    np.testing.assert_allclose(np.asarray(shallow(tokens)), np.asarray(model.head(h)),
                               rtol=1e-6, atol=1e-6)
    assert count_params(shallow) == shallow.config.num_params()


@pytest.mark.parametrize(
    "cut, message",
    [
        (dict(heads={0: []}), "block 0: heads would keep none of 6"),
        (dict(mlp_channels={1: []}), "block 1: mlp_channels would keep none of 128"),
        (dict(heads={0: [0, 1, 2]}), "needs the same number of query heads"),
        (dict(heads={5: [0, 1]}), "heads: block index 5 is out of range; the model has 3"),
        (dict(heads={0: [0, 6]}), "heads indices must be in [0, 6)"),
        (dict(kv_groups={0: [0]}, heads={0: [0, 2]}), "include heads of KV groups [1]"),
        (dict(hidden=[]), "hidden would keep none of 64"),
    ],
)
def test_bad_cuts_are_refused(cut, message):
    with pytest.raises(ValueError) as error:
        structured.prune_width(tiny(), **cut)
    assert message in str(error.value)


def test_bad_block_removals_are_refused():
    with pytest.raises(ValueError, match="block index 3 is out of range"):
        structured.remove_blocks(tiny(), [3])
    with pytest.raises(ValueError, match="removing every block"):
        structured.remove_blocks(tiny(), [0, 1, 2])


def test_uniform_cut_exports_and_reloads(tmp_path):
    model = tiny()
    cut = structured.prune_width(model, heads={b: [0, 2, 4] for b in range(3)},
                                 mlp_channels={b: list(range(96)) for b in range(3)})
    assert cut.config.is_uniform
    models.save_hf_dir(cut, str(tmp_path / "hf"))
    reloaded, _ = models.load(str(tmp_path / "hf"))
    np.testing.assert_allclose(logits(reloaded), logits(cut), rtol=1e-6, atol=1e-6)
    ragged = structured.prune_width(model, mlp_channels={0: list(range(64))})
    with pytest.raises(ValueError, match="needs the same widths in every block"):
        models.save_hf_dir(ragged, str(tmp_path / "ragged"))

