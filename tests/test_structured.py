"""Structured surgery: cutting what carries nothing leaves the logits unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune import models, structured
from tests.families import tiny_model


def tiny(seed=0, qk_norm=False):
    """Three blocks; ``qk_norm``: Qwen3's q/k norms, with random scales (ones would hide a
    norm cut along the wrong axis)."""
    config = models.RANDOM_MODELS["tiny-llama"].replace(
        num_layers=3, num_heads=6, num_kv_heads=3, intermediate_size=128, qk_norm=qk_norm)
    model = models.Llama(config, rngs=nnx.Rngs(seed))
    for i, block in enumerate(model.layers if qk_norm else []):
        for j, norm in enumerate((block.self_attn.q_norm, block.self_attn.k_norm)):
            key = jax.random.PRNGKey(100 + 2 * i + j)
            norm.scale[...] = 1.0 + 0.3 * jax.random.normal(key, norm.scale.shape)
    return model


def logits(model):
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 24), 0, 256)
    return np.asarray(model(tokens))


def zero(variable, index):
    variable[...] = variable[...].at[index].set(0.0)


def count_params(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_cutting_dead_heads_groups_and_channels_keeps_the_logits(qk_norm):
    model = tiny(qk_norm=qk_norm)
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


@pytest.mark.parametrize("qk_norm", [False, True])
def test_cutting_dead_hidden_channels_keeps_the_logits(qk_norm):
    model = tiny(qk_norm=qk_norm)
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


def test_cutting_dead_hidden_channels_of_gemma3_keeps_the_logits():
    """Gemma's four (1 + w) norms per block are rescaled in their effective scale, and its
    input embedding multiplier sqrt(hidden) shrinks with the width: the embedding makes up for
    it, and the tied head's final norm takes the inverse."""
    model = tiny_model("gemma3")
    dead = [3, 11, 30]
    zero(model.embed_tokens.embedding, (slice(None), dead))
    for block in model.layers:
        zero(block.self_attn.o_proj.kernel, (slice(None), dead))
        zero(block.mlp.down_proj.kernel, (slice(None), dead))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 24), 0, 64)
    expected = np.asarray(model(tokens))
    cut = structured.prune_width(model, hidden=[j for j in range(32) if j not in dead])
    assert cut.config.hidden_size == 29 and cut.config.scale_embeddings
    np.testing.assert_allclose(np.asarray(cut(tokens)), expected, rtol=1e-5, atol=1e-5)
    assert count_params(cut) == cut.config.num_params()


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
    # (4 heads: transformers wants the hidden size, 64, to be a multiple of the head count.)
    cut = structured.prune_width(model, kv_groups={b: [0, 2] for b in range(3)},
                                 mlp_channels={b: list(range(96)) for b in range(3)})
    assert cut.config.is_uniform
    models.save_hf_dir(cut, str(tmp_path / "hf"))
    reloaded, _ = models.load(str(tmp_path / "hf"))
    np.testing.assert_allclose(logits(reloaded), logits(cut), rtol=1e-6, atol=1e-6)
    ragged = structured.prune_width(model, mlp_channels={0: list(range(64))})
    with pytest.raises(ValueError, match="needs the same widths in every block"):
        models.save_hf_dir(ragged, str(tmp_path / "ragged"))



def calibration(batch=4, length=32):
    return np.asarray(jax.random.randint(jax.random.PRNGKey(3), (batch, length), 0, 256))


def test_activation_importance_finds_planted_dead_units_and_cutting_them_is_exact():
    model = tiny()
    d = model.config.head_dim
    # KV group 1 of block 0 reads zero values, so its heads 2 and 3 output zero; MLP channels
    # 5 and 9 of block 1 have zero gate columns, so their activations are zero.
    zero(model.layers[0].self_attn.v_proj.kernel, (slice(None), slice(d, 2 * d)))
    for channel in (5, 9):
        zero(model.layers[1].mlp.gate_proj.kernel, (slice(None), channel))
    scores = structured.activation_importance(model, calibration(), batch_size=2)
    assert [s.shape for s in scores.heads] == [(6,)] * 3
    assert scores.heads[0][2] == 0 and scores.heads[0][3] == 0
    assert np.all(np.delete(scores.heads[0], [2, 3]) > 0)
    assert scores.kv_groups[0][1] == 0 and scores.mlp[1][5] == 0 and scores.mlp[1][9] == 0
    assert np.all(scores.hidden > 0)
    dead_group = int(np.argmin(scores.kv_groups[0]))
    channels = np.argsort(scores.mlp[1], kind="stable")[2:]
    cut = structured.prune_width(model, kv_groups={0: [g for g in range(3) if g != dead_group]},
                                 mlp_channels={1: channels.tolist()})
    np.testing.assert_allclose(logits(cut), logits(model), rtol=1e-5, atol=1e-5)


def test_aggregations_follow_their_definitions():
    model = tiny()
    segments = calibration()
    graphdef, state = nnx.split(model)
    net = nnx.merge(graphdef, state)
    tokens = jnp.asarray(segments)
    h = net.embed(tokens)
    cos, sin = net.rope(tokens.shape[1])
    _, inputs = net.layers[0].forward_with_inputs(h, cos, sin)
    act = np.abs(np.asarray(inputs["down"], np.float64))  # [batch, seq, channels]
    for seq_agg, batch_agg, expected in [
        ("mean", "l2", np.sqrt(np.sum(act.mean(axis=1) ** 2, axis=0))),
        ("l2", "mean", np.sqrt(np.sum(act ** 2, axis=1)).mean(axis=0)),
        ("max", "max", act.max(axis=(0, 1))),
    ]:
        scores = structured.activation_importance(model, segments, batch_size=3,
                                                  seq_agg=seq_agg, batch_agg=batch_agg)
        np.testing.assert_allclose(scores.mlp[0], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="seq_agg must be one of"):
        structured.activation_importance(model, segments, seq_agg="median")


def test_magnitude_and_taylor_importance_of_a_head():
    model = tiny()
    d = model.config.head_dim
    q = np.asarray(model.layers[1].self_attn.q_proj.kernel[...], np.float64)
    o = np.asarray(model.layers[1].self_attn.o_proj.kernel[...], np.float64)
    expected = np.sqrt(np.sum(q[:, 2 * d:3 * d] ** 2) + np.sum(o[2 * d:3 * d] ** 2))
    scores = structured.magnitude_importance(model)
    np.testing.assert_allclose(scores.heads[1][2], expected, rtol=1e-6)
    np.testing.assert_allclose(scores.kv_groups[1][1], scores.heads[1][2] + scores.heads[1][3])
    zero(model.layers[2].mlp.gate_proj.kernel, (slice(None), 4))
    zero(model.layers[2].mlp.up_proj.kernel, (slice(None), 4))
    zero(model.layers[2].mlp.down_proj.kernel, 4)
    taylor = structured.taylor_importance(model, calibration(), batch_size=2)
    assert taylor.mlp[2][4] == 0 and np.all(np.delete(taylor.mlp[2], 4) > 0)


def test_depth_scores_single_out_an_identity_block():
    model = tiny()
    zero(model.layers[1].self_attn.o_proj.kernel, slice(None))
    zero(model.layers[1].mlp.down_proj.kernel, slice(None))  # block 1 now passes h unchanged
    influence = structured.block_influence(model, calibration())
    assert influence[1] == pytest.approx(0.0, abs=1e-6) and np.all(influence[[0, 2]] > 1e-3)
    assert structured.least_important(influence, 1) == [1]
    distances = structured.angular_distances(model, calibration(), 1)
    assert distances.shape == (3,) and int(np.argmin(distances)) == 1
    text = np.asarray(jax.random.randint(jax.random.PRNGKey(4), (600,), 0, 256))
    dropped = structured.drop_one_perplexity(model, text, window=64, max_windows=4)
    full = structured.drop_one_perplexity(tiny(), text, window=64, max_windows=4)
    assert dropped.shape == (3,) and full.shape == (3,)
    from jaxprune.eval import perplexity

    base = perplexity(model, text, window=64, max_windows=4, progress=False).perplexity
    assert dropped[1] == pytest.approx(base, rel=1e-5)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 3\]"):
        structured.angular_distances(model, calibration(), 4)


def test_closest_pairs_are_disjoint_and_greedy_by_distance():
    # Pairs start at 3 (blocks 3, 4), then 1 (1, 2); 2 overlaps both, 0 overlaps pair 1.
    assert structured.closest_pairs(np.array([0.5, 0.1, 0.2, 0.05, 0.3]), 2) == [1, 3]
    assert structured.closest_pairs(np.array([0.5, 0.1, 0.2, 0.05, 0.3]), 0) == []
    # Greedy takes 1 (blocks 1, 2), after which no second disjoint pair is left among 4 blocks.
    with pytest.raises(ValueError, match="count=2 disjoint pairs"):
        structured.closest_pairs(np.array([0.3, 0.1, 0.2]), 2)
    with pytest.raises(ValueError, match="count must be a non-negative integer"):
        structured.closest_pairs(np.array([0.3, 0.1]), -1)


def test_distillation_kl_matches_its_definition():
    from jaxprune.losses import distillation_kl

    rng = np.random.default_rng(0)
    student, teacher = rng.standard_normal((2, 3, 11)), rng.standard_normal((2, 3, 11))
    for t in (1.0, 2.0):
        p = np.exp(teacher / t) / np.exp(teacher / t).sum(-1, keepdims=True)
        q = np.exp(student / t) / np.exp(student / t).sum(-1, keepdims=True)
        expected = (p * (np.log(p) - np.log(q))).sum(-1) * t * t
        np.testing.assert_allclose(distillation_kl(jnp.asarray(student), jnp.asarray(teacher),
                                                   temperature=t), expected, rtol=1e-5)
    assert float(jnp.max(jnp.abs(distillation_kl(jnp.asarray(teacher),
                                                 jnp.asarray(teacher))))) < 1e-6


@pytest.mark.parametrize("cut, criterion", [
    ("dense", ""), ("depth4", "block_influence"), ("depth4", "angular"),
    ("depth4", "drop_one"), ("lowrank4", "angular"), ("fold4", "block_influence"),
    ("heads6", "activation"), ("mlp", "magnitude"), ("hidden448", "taylor"),
    ("search80m", "activation")])
def test_structured_job_cuts_every_way(cut, criterion):
    from configs import structured as structured_config
    from experiments import common, structured_job

    config = structured_config.get_config(f"{cut},runlocal")
    if criterion:
        config.cut.criterion = criterion
    config = common.apply_runlocal(config)
    if cut == "heads6":  # the cut model's zero-shot figures, beside its perplexity
        config.eval.zeroshot.tasks, config.eval.zeroshot.limit = "winogrande", 2
    resources = common.Resources()
    structured_job.prepare(config, resources)
    outcome = structured_job.run_point(config, resources)
    metrics = outcome["metrics"]
    if cut == "heads6":
        assert metrics["zeroshot mean before"] == metrics["zeroshot winogrande acc before"]
        assert metrics["zeroshot mean before"] in (0.0, 0.5, 1.0)
    teacher = resources.model(config)[0]
    student = outcome["student"]
    assert metrics["params"] == student.config.num_params() == count_params(student)
    if cut == "dense":
        assert metrics["params"] == teacher.config.num_params()
    else:
        assert metrics["params"] < teacher.config.num_params()
    assert 1.0 < metrics["perplexity"] < 1000 and metrics["tokens_per_second"] > 0
    if cut in ("depth4", "lowrank4", "fold4"):
        assert student.config.num_layers == teacher.config.num_layers - 1
    if cut == "fold4":  # tiny-llama's 2 blocks: block 1 folds into block 0
        assert outcome["details"]["folded"] == [1]
    if cut == "search80m":  # the winner is one of the candidates, each within the budget
        rows = outcome["details"]["search"]
        assert len(rows) >= 2 and sum("distilled_loss" in r for r in rows) == 2
        assert metrics["params"] in [r["params"] for r in rows]
        assert all(abs(r["params"] - 50_000) <= 2_500 for r in rows)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.cut.heads_per_group=0", "a width cut needs config.cut.heads_per_group"),
        ("--config.cut.heads_per_group=3", "config.cut.heads_per_group keeps 3, more than the "
                                           "model's 2"),
        ("--config.cut.criterion=random", "config.cut.criterion must be one of"),
        ("--config.cut.kind=diagonal", "config.cut.kind must be one of"),
        ("--config.cut.kind=fuse --config.cut.criterion=angular --config.cut.blocks=2",
         "config.cut.blocks=2 fusions need 4 blocks, the model has 2"),
        ("--config.cut.kind=fuse --config.cut.criterion=angular --config.cut.blocks=1 "
         "--config.cut.fusion=laco", "config.cut.blocks=1 fusions need 2 blocks, the model "
                                    "has 1 that config.cut.fusion='laco' may fuse"),
        ("--config.cut.kind=fuse --config.cut.criterion=block_influence --config.cut.blocks=2",
         "config.cut.blocks=2 folded blocks need 3 blocks, the model has 2"),
        ("--config.cut.kind=fuse --config.cut.criterion=angular --config.cut.blocks=1 "
         "--config.cut.fusion=svd", "config.cut.fusion must be one of ['average', 'laco', "
                                    "'lowrank'], got 'svd'"),
        ("--config.cut.kind=fuse --config.cut.criterion=angular --config.cut.blocks=1 "
         "--config.cut.fusion=lowrank --config.cut.rank=65", "config.cut.rank=65: rank must "
                                                             "be an integer in [1, 64]"),
        ("--config.cut.kind=search --config.cut.criterion=activation "
         "--config.cut.search.target_params=1000", "config.cut.search: no shape is within 2% "
                                                   "of target_params=1,000"),
        ("--config.cut.kind=search --config.cut.criterion=activation "
         "--config.cut.search.target_params=50000 --config.cut.search.depth_criterion=angular",
         "config.cut.search.depth_criterion must be one of ['block_influence', 'drop_one']"),
        ("--config.quantize=joint", "config.quantize must be one of ('none', 'rtn', 'gptq') "
                                    "after a structured cut, got 'joint'"),
        ("--config.quantize=gptq --config.quant_settings.quant_bits=2",
         "quant_bits must be one of (4, 8), got 2 (config.quant_settings)"),
        ("--config.quantize=gptq --config.quant_settings.aware=True",
         "config.quant_settings.aware=True distils through the grid and then rounds to it"),
        ("--config.quantize=gptq --config.quant_embedding_bits=2",
         "config.quant_embedding_bits must be 0 (float) or one of (4, 8), got 2"),
        ("--config.quant_embedding_bits=8", "config.quant_embedding_bits rounds the embedding "
                                            "table of a quantized student; set config.quantize"),
    ],
)
def test_structured_binary_refuses_bad_cuts(tmp_path, override, message):
    from tests import inprocess

    result = inprocess.run("experiments.structured",
                           "--config=configs/structured.py:heads6,runlocal",
                           f"--config.workdir={tmp_path / 'w'}", *override.split())
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "w").exists()


def test_a_grid_the_cut_student_cannot_take_stops_the_job_before_distillation(tmp_path):
    """heads6 leaves the tiny model's o_proj 32 inputs, which groups of 64 do not divide: the
    job stops right after the cut, not after the distillation it would quantize."""
    from tests import inprocess

    result = inprocess.run("experiments.structured",
                           "--config=configs/structured.py:heads6,distill,runlocal",
                           "--config.quantize=gptq", f"--config.workdir={tmp_path}")
    assert result.returncode != 0
    assert ("quantization group_size 64 does not divide the 32 inputs of "
            "'layers/0/self_attn/o_proj/kernel'") in result.stderr, result.stderr[-2000:]
    assert "perplexity" not in result.stderr and "step 1" not in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_distillation_resumed_after_a_kill_follows_the_same_curve(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    args = ["--config=configs/structured.py:mlp,distill,runlocal", "--config.train.steps=100",
            "--config.train.checkpoint_every=20", "--config.train.log_every=20"]

    def command(workdir):
        return [sys.executable, "-m", "experiments.structured", *args,
                f"--config.workdir={workdir}"]

    from tests import inprocess

    def run_here(*extra, workdir):  # the runs that need no kill, in this process
        return inprocess.run("experiments.structured", *args, *extra,
                             f"--config.workdir={workdir}")

    full = run_here(workdir=tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    process = subprocess.Popen(command(tmp_path / "killed"), cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "40"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and not checkpoint.is_dir():
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    resumed = run_here(workdir=tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the checkpoint of step" in resumed.stderr
    results = {name: json.loads((tmp_path / name / "results.json").read_text())
               for name in ("full", "killed")}
    # The whole curve survives the kill (it travels with the checkpoints), bit for bit.
    assert results["killed"]["curve"] == results["full"]["curve"]
    assert [step for step, _ in results["full"]["curve"]] == list(range(20, 101, 20))
    timing_free = ("tokens_per_second", "dense_tokens_per_second")
    assert ({k: v for k, v in results["killed"]["metrics"].items() if k not in timing_free}
            == {k: v for k, v in results["full"]["metrics"].items() if k not in timing_free})
    # Another cut in the same workdir stops before the model loads (it used to crash in orbax
    # restoring checkpoints of another shape).
    other = run_here("--config.cut.mlp_channels=64", workdir=tmp_path / "killed")
    assert other.returncode != 0
    assert "cut.mlp_channels: 96 -> 64" in other.stderr, other.stderr[-2000:]
    assert "resumed from" not in other.stderr and "Traceback" not in other.stderr


def test_fusing_two_identical_blocks_equals_dropping_one():
    model = tiny()
    state = nnx.state(model.layers[0], nnx.Param)
    nnx.update(model.layers[1], state)  # block 1 is now a copy of block 0
    fused = structured.fuse_blocks(model, 0, weight=0.3)
    dropped = structured.remove_blocks(model, [1])
    assert fused.config.num_layers == 2
    # 0.3 w + 0.7 w rounds to w within a float32 ulp or two
    np.testing.assert_allclose(logits(fused), logits(dropped), rtol=1e-5, atol=1e-5)
    other = structured.fuse_blocks(tiny(), 1)
    assert other.config.num_layers == 2 and not np.allclose(logits(other), logits(tiny()))
    with pytest.raises(ValueError, match=r"first must be in \[0, 2\)"):
        structured.fuse_blocks(model, 2)
    ragged = structured.prune_width(model, mlp_channels={0: list(range(64))})
    with pytest.raises(ValueError, match="differ in width"):
        structured.fuse_blocks(ragged, 0)


def test_structured_benchmark_runlocal(tmp_path, capsys):
    import json

    from configs import bench_structured as bench_config
    from experiments import bench_structured, common

    config = common.apply_runlocal(bench_config.get_config("runlocal"))
    config.out = str(tmp_path / "bench.json")
    bench_structured.report(config, bench_structured.time_cuts(config))
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["cut"] for r in rows] == list(bench_config.SHAPE_CUTS)
    assert rows[0]["vs dense"] == 1.0
    assert all(r["params"] < rows[0]["params"] and len(r["runs"]) == 2 for r in rows[1:])
    assert "| dense |" in capsys.readouterr().out


def _quantized_cut_row(workdir, *quantize):
    """depth -1 + 4 steps of distillation + int4 (groups of 32) on the tiny model, in
    ``workdir`` with a GGUF of the student: the results row."""
    import json

    from tests import inprocess

    result = inprocess.run("experiments.structured",
                           "--config=configs/structured.py:depth4,distill,runlocal",
                           *quantize, "--config.quant_settings.quant_group_size=32",
                           "--config.train.steps=4", "--config.train.warmup_steps=1",
                           "--config.save_gguf=F32", f"--config.workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((workdir / "results.json").read_text())["metrics"]


def test_a_cut_student_is_quantized_after_distillation_by_the_grid_it_learnt(tmp_path):
    """Quantization-aware distillation, then round-to-nearest on the grid it saw."""
    row = _quantized_cut_row(tmp_path, "--config.quantize=rtn",
                             "--config.quant_settings.aware=True")
    assert row["method"].endswith("+ rtn int4-g32-sym (quantization-aware distillation)")
    assert row["perplexity"] != row["perplexity_unquantized"]


def test_a_cut_student_is_quantized_with_and_without_its_embedding_table(tmp_path):
    """GPTQ int4 after the distillation: the row keeps both perplexities and zero-shot
    figures and the packed size,
    the GGUF holds the one-block student, and rounding the embedding table to int8 (one
    float16 scale per token) is the only difference in size."""
    from jaxprune.models import gguf_io
    from jaxprune.models.registry import RANDOM_MODELS

    rows = [_quantized_cut_row(tmp_path / str(bits), "--config.quantize=gptq",
                               f"--config.quant_embedding_bits={bits}",
                               "--config.eval.zeroshot.tasks=winogrande",
                               "--config.eval.zeroshot.limit=4") for bits in (0, 8)]
    # Zero-shot figures of the quantized model, the float student's kept beside them.
    for row in rows:
        assert {"zeroshot mean", "zeroshot mean unquantized", "zeroshot mean before"} <= set(row)
    assert (tmp_path / "8" / "quantized" / "zeroshot" / "winogrande.json").is_file()
    assert rows[0]["method"].endswith("+ gptq int4-g32-sym")
    assert rows[1]["method"].endswith("+ gptq int4-g32-sym+emb-int8")
    assert rows[0]["perplexity"] != rows[0]["perplexity_unquantized"]
    assert rows[1]["perplexity_unquantized"] == rows[0]["perplexity_unquantized"]
    assert rows[1]["perplexity"] != rows[0]["perplexity"]  # the rounded table is used
    assert 0 < rows[0]["weights_mb"] < 0.1
    vocab, hidden = RANDOM_MODELS["tiny-llama"].vocab_size, RANDOM_MODELS["tiny-llama"].hidden_size
    saved = (rows[0]["weights_mb"] - rows[1]["weights_mb"]) * 2**20
    assert saved == pytest.approx(vocab * hidden * (2 - 1) - 2 * vocab)
    # The student, one block left, for llama.cpp.
    assert gguf_io.load_gguf(str(tmp_path / "0" / "model.gguf"))[0].config.num_layers == 1
