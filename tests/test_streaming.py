"""Streamed one-shot pruning (one block at a time, disk to disk) against the in-memory engine."""

import json
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import bench_streaming as bench_streaming_config
from experiments import common
from jaxprune import models, oneshot, paths
from jaxprune.eval import evaluation_windows, perplexity, streamed_perplexity
from jaxprune.quant import QuantSpec
from tests import inprocess

CONFIG = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=3, num_heads=4,
                            num_kv_heads=2, intermediate_size=48, head_dim=8)
SEGMENTS = np.random.default_rng(0).integers(0, 64, (8, 16))


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("dense") / "hf")
    models.save_hf_dir(models.Llama(CONFIG, rngs=nnx.Rngs(0)), directory)
    return directory


def _settings(method, pattern, **kwargs):
    sparsity = None if pattern == "2:4" else 0.5
    return oneshot.OneShotConfig(method=method, pattern=pattern, sparsity=sparsity,
                                 batch_size=4, **kwargs)


def _params(model) -> dict:
    return {p: np.asarray(v) for p, v in paths.leaves_with_paths(nnx.state(model, nnx.Param))}


def _without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("method, pattern, order, dtype", [
    (oneshot.SparseGPT(), "2:4", "sequential", jnp.float32),
    (oneshot.WANDA, "per_output", "dense", jnp.float32),
    (oneshot.MAGNITUDE, "unstructured", "sequential", jnp.float32),
    (oneshot.SparseGPT(), "unstructured", "sequential", jnp.bfloat16),
])
def test_streamed_pruning_equals_the_in_memory_engine(dense_dir, tmp_path, method, pattern,
                                                      order, dtype):
    settings = _settings(method, pattern, order=order)
    loaded, _ = models.load(dense_dir, param_dtype=dtype)
    want = oneshot.prune_oneshot(loaded, SEGMENTS, settings, progress=False)
    out = str(tmp_path / "pruned")
    got = oneshot.prune_streamed(models.open_hf_dir(dense_dir, param_dtype=dtype)[0], SEGMENTS,
                                 out, settings, progress=False)
    assert got.resumed_at == 0 and not os.path.exists(out + ".partial")
    pruned, _ = models.load(out, param_dtype=dtype)
    want_params, got_params = _params(want.model), _params(pruned)
    assert sorted(got_params) == sorted(want_params)
    for path, value in want_params.items():
        np.testing.assert_array_equal(got_params[path], value, err_msg=path)
    want_masks = {p: np.asarray(m) for p, m in paths.leaves_with_paths(want.masks)
                  if m is not None}
    got_masks = oneshot.read_streamed_masks(out)
    assert sorted(got_masks) == sorted(want_masks) and len(got_masks) == 7 * 3
    for path, mask in want_masks.items():
        np.testing.assert_array_equal(got_masks[path], mask, err_msg=path)
    assert _without_seconds(got.layers) == _without_seconds(want.layers)
    assert oneshot.streamed_sparsity(out) == pytest.approx(oneshot.achieved_sparsity(want))
    with open(os.path.join(out, "config.json")) as f:
        stored = json.load(f)["torch_dtype"]
    assert stored == ("bfloat16" if dtype == jnp.bfloat16 else "float32")


class _InterruptedError(Exception):
    pass


def test_an_interrupted_run_resumes_at_its_first_unfinished_block(dense_dir, tmp_path,
                                                                   monkeypatch):
    settings = _settings(oneshot.SparseGPT(), "2:4")
    whole = str(tmp_path / "whole")
    oneshot.prune_streamed(models.open_hf_dir(dense_dir)[0], SEGMENTS, whole, settings,
                           fingerprint="f", progress=False)
    stopped = models.open_hf_dir(dense_dir)[0]
    original = models.LazyModel.block

    def block_until_2(self, index):
        if index == 2:
            raise _InterruptedError
        return original(self, index)

    out = str(tmp_path / "resumed")
    monkeypatch.setattr(models.LazyModel, "block", block_until_2)
    with pytest.raises(_InterruptedError):
        oneshot.prune_streamed(stopped, SEGMENTS, out, settings, fingerprint="f",
                               progress=False)
    monkeypatch.undo()
    assert sorted(f for f in os.listdir(out + ".partial") if f.startswith("block-")) == [
        "block-00000.json", "block-00001.json"]
    resumed = oneshot.prune_streamed(models.open_hf_dir(dense_dir)[0], SEGMENTS, out, settings,
                                     fingerprint="f", progress=False)
    assert resumed.resumed_at == 2
    for name in sorted(os.listdir(whole)):
        if name.endswith(".safetensors") or name in ("config.json",
                                                     "model.safetensors.index.json"):
            with open(os.path.join(whole, name), "rb") as a, \
                    open(os.path.join(out, name), "rb") as b:
                assert a.read() == b.read(), name


def test_another_configurations_partial_run_is_refused(dense_dir, tmp_path):
    out = str(tmp_path / "pruned")
    os.makedirs(out + ".partial")
    with open(os.path.join(out + ".partial", oneshot.streaming.STATE_FILE), "w") as f:
        json.dump({"fingerprint": "other", "blocks": 3}, f)
    with pytest.raises(FileExistsError, match="holds a streamed run of another configuration"):
        oneshot.prune_streamed(models.open_hf_dir(dense_dir)[0], SEGMENTS, out,
                               _settings(oneshot.WANDA, "2:4"), fingerprint="mine",
                               progress=False)


@pytest.mark.parametrize("settings, message", [
    (_settings(oneshot.WANDA, "unstructured", allocation=oneshot.OWL()),
     "allocation OWL ranks every block before pruning any"),
    (oneshot.OneShotConfig(method=oneshot.MAGNITUDE, pattern="global", sparsity=0.5),
     "pattern 'global' ranks every kernel at once"),
    (_settings(oneshot.OBD_FISHER, "unstructured"), "needs a whole-model"),
    (_settings(oneshot.WANDA, "2:4", quantization=oneshot.RoundToNearest(QuantSpec(4, 16))),
     "quantization is not streamed yet"),
])
def test_what_needs_the_whole_model_is_refused_before_work(dense_dir, tmp_path, settings,
                                                           message):
    out = str(tmp_path / "pruned")
    with pytest.raises(ValueError, match=message):
        oneshot.prune_streamed(models.open_hf_dir(dense_dir)[0], SEGMENTS, out, settings,
                               progress=False)
    assert os.listdir(tmp_path) == []


def test_an_existing_output_directory_is_refused(dense_dir, tmp_path):
    with pytest.raises(FileExistsError, match="output directory already exists"):
        oneshot.prune_streamed(models.open_hf_dir(dense_dir)[0], SEGMENTS, str(tmp_path),
                               _settings(oneshot.WANDA, "2:4"), progress=False)


@pytest.mark.parametrize("bos_id", [None, 1])
def test_streamed_perplexity_agrees_with_the_whole_model(dense_dir, bos_id):
    """Against the whole model's evaluation and an independent float64 numpy NLL of its
    logits; a last batch padded (5 windows in batches of 2)."""
    tokens = np.random.default_rng(3).integers(0, CONFIG.vocab_size, 5 * 12 + 3)
    model, _ = models.load(dense_dir)
    want = perplexity(model, tokens, window=12, batch_size=2, progress=False, bos_id=bos_id)
    got = streamed_perplexity(models.open_hf_dir(dense_dir)[0], tokens, window=12, batch_size=2,
                              progress=False, bos_id=bos_id)
    assert got.num_windows == want.num_windows == 5
    assert got.mean_nll == pytest.approx(want.mean_nll, rel=1e-6)
    windows = evaluation_windows(tokens, 12, bos_id=bos_id)
    logits = np.asarray(model(jnp.asarray(windows[:, :-1])), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, windows[:, 1:, None], axis=-1).mean()
    assert got.mean_nll == pytest.approx(nll, rel=1e-5)


@pytest.fixture(scope="module")
def job_source(tmp_path_factory):
    """A 6-block random model with its byte tokenizer, as a Hugging Face directory."""
    tiny, tokenizer = models.load("tiny-llama")
    source = str(tmp_path_factory.mktemp("job") / "dense")
    models.save_hf_dir(models.Llama(tiny.config.replace(num_layers=6), rngs=nnx.Rngs(1)),
                       source, tokenizer=tokenizer)
    return source


def test_the_streamed_job_killed_at_a_random_block_resumes_to_the_same_bytes(tmp_path,
                                                                            job_source):
    """experiments.prune with config.stream=True on a 6-block model: SIGKILLed once a random
    block is written, run again, against a run never stopped."""
    source = job_source
    job = ["--config=configs/sparsegpt.py:runlocal", f"--config.model={source}",
           "--config.pattern=2:4", "--config.stream=True", "--config.eval.zeroshot.tasks=rte",
           "--config.eval.zeroshot.limit=2"]
    whole = inprocess.run("experiments.prune", *job, f"--config.workdir={tmp_path / 'a'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    block = int(np.random.default_rng().integers(0, 4))
    marker = tmp_path / "b" / "hf.partial" / f"block-{block:05d}.json"
    killed = subprocess.Popen([sys.executable, "-m", "experiments.prune", *job,
                               f"--config.workdir={tmp_path / 'b'}"], cwd=inprocess.REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, f"finished before block {block} was killed"
    again = inprocess.run("experiments.prune", *job, f"--config.workdir={tmp_path / 'b'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the streamed run" in again.stderr, f"killed after block {block}"
    files = sorted(os.listdir(tmp_path / "a" / "hf"))
    assert files == sorted(os.listdir(tmp_path / "b" / "hf"))
    for name in files:
        if not name.startswith("block-"):  # the records hold each run's seconds
            assert (tmp_path / "a" / "hf" / name).read_bytes() == (
                tmp_path / "b" / "hf" / name).read_bytes(), f"{name}, killed after {block}"
    rows = [json.loads((tmp_path / run / "results.json").read_text())["rows"][-1]
            for run in ("a", "b")]
    assert rows[0]["perplexity"] == rows[1]["perplexity"]
    assert rows[0]["zeroshot rte acc"] == rows[1]["zeroshot rte acc"]  # scored streamed


@pytest.mark.parametrize("overrides, message", [
    ([], "config.model with config.stream=True: 'tiny-llama' is a random model with no file "
         "to read block by block"),
    (["--config.save_hf=True"], "config.save_hf=True does not apply with config.stream=True"),
    (["--config.workdir="], "config.workdir is required"),
])
def test_a_streamed_job_that_cannot_run_fails_before_work(tmp_path, overrides, message):
    result = inprocess.run("experiments.prune", "--config=configs/wanda.py:runlocal",
                           "--config.model=tiny-llama", "--config.stream=True",
                           f"--config.workdir={tmp_path / 'w'}", *overrides)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "w" / "hf.partial").exists()


def test_the_streaming_benchmark_smoke_run_writes_its_table_json_and_plot(tmp_path):
    out = tmp_path / "bench.json"
    result = inprocess.run("experiments.bench_streaming",
                           "--config=configs/bench_streaming.py:runlocal", f"--config.out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["method"], row["mode"]) == ("wanda", "streamed")
    assert row["peak memory MB"] > 0 and row["prune seconds"] > 0
    assert 1 < row["perplexity"] < 1000
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "| tiny | 0.000 | wanda | streamed |" in result.stdout


def test_the_streaming_benchmark_skips_a_whole_model_that_would_not_fit():
    bench = inprocess.load("experiments.bench_streaming")
    settings = bench_streaming_config.get_config()
    settings.memory_limit_gb = 0.5
    row = bench.run_point(settings, "135m", "wanda", "whole", "/nonexistent")
    assert row["note"] == "not run: about 1 GB"  # 135M x (2 x 2 + 4) bytes in bfloat16
    assert bench.whole_model_gb(bench.SHAPES["3b"], "bfloat16") > 24  # OOM-killed when run
    table = common.markdown_table([row], ["size", "mode", "wall seconds"],
                                  {"wall seconds": ".1f"})
    assert table.endswith("| 135m | whole |  |")  # a skipped point's missing cells stay empty
    lines = bench.slopes([
        {"method": "wanda", "mode": "streamed", "params (B)": p, "peak memory MB": 1024 * m,
         "prune seconds": s} for p, m, s in ((0.1, 1.0, 10.0), (0.3, 1.2, 30.0))])
    assert lines == [{"method": "wanda", "mode": "streamed", "GB per B params": 1.0,
                      "GB at 0": 0.9, "seconds per B params": 100.0, "seconds at 0": 0.0}]


def test_a_streamed_job_without_room_for_its_output_fails_before_work(tmp_path, job_source,
                                                                      monkeypatch):
    from jaxprune import workdir

    monkeypatch.setattr(workdir, "free_bytes", lambda path: 10_000)
    result = inprocess.run("experiments.prune", "--config=configs/wanda.py:runlocal",
                           f"--config.model={job_source}", "--config.stream=True",
                           f"--config.workdir={tmp_path / 'w'}")
    assert result.returncode != 0
    assert "MB free; this job writes about" in result.stderr
    assert not (tmp_path / "w" / "hf.partial").exists()


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_streamed_zero_shot_scores_equal_the_whole_model(tmp_path, family):
    """Packed groups scored from a lazily opened model, a few batches per read of the model
    (hold_tokens), against the model in memory: sliding windows and Gemma 3's local RoPE
    table included."""
    from jaxprune.eval import loglikelihood
    from tests.families import tiny_model
    from tests.test_zeroshot import packable_groups

    model = tiny_model(family, seed=3)
    models.save_hf_dir(model, str(tmp_path / "hf"))
    lazy_model = models.open_hf_dir(str(tmp_path / "hf"))[0]
    groups = packable_groups(6) * 3
    want = loglikelihood.score_groups(model, groups, batch_size=2, max_length=24,
                                      progress=False)
    got = loglikelihood.score_groups(lazy_model, groups, batch_size=2, max_length=24,
                                     progress=False, hold_tokens=100)
    for want_group, got_group in zip(want, got, strict=True):
        for a, b in zip(want_group, got_group, strict=True):
            assert b.loglikelihood == pytest.approx(a.loglikelihood, rel=1e-5, abs=1e-5)
            assert b.is_greedy == a.is_greedy
    with pytest.raises(ValueError, match="hold_tokens must be a positive integer, got 0"):
        loglikelihood.score_groups(lazy_model, groups, hold_tokens=0, progress=False)
