"""One-shot pruning on a device mesh (8 fake CPU devices; 2 processes of 2) equals one device."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import jaxprune as jp
from jaxprune import models, oneshot
from tests import inprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sparsegpt_and_wanda_on_8_devices_match_one_device():
    """Wanda on a Llama, SparseGPT on a Gemma 3 layout (tests/mesh_equivalence.py)."""
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "mesh_equivalence.py")], cwd=REPO,
        capture_output=True, text=True, timeout=600, check=False,
        env=dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.count(" ok") == 2 and "gemma3 sparsegpt 2:4 mesh 1x8" in result.stdout


@pytest.fixture(scope="module")
def tiny():
    config = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                                num_kv_heads=2, intermediate_size=48, head_dim=8)
    return models.Llama(config, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kwargs, segments, message", [
    (dict(mesh_data=4, batch_size=6), 8, "mesh_data=4 must divide batch_size \\(6\\)"),
    (dict(mesh_data=4, batch_size=4), 6, "and the number of calibration segments \\(6\\)"),
    (dict(mesh_model=5), 8,
     "mesh_model=5 must divide the output size of 'layers/0/mlp/down_proj/kernel'"),
    (dict(mesh_data=0), 8, "mesh_data must be >= 1"),
    (dict(mesh_data=2, batch_size=4, mesh_model=2), 8, "needs 4 devices, found 1"),
])
def test_bad_mesh_is_refused(tiny, kwargs, segments, message):
    tokens = np.zeros((segments, 8), np.int32)
    with pytest.raises(ValueError, match=message):
        oneshot.plan_oneshot(tiny, tokens, oneshot.OneShotConfig(**kwargs))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_prune_as_one_process_on_the_same_2x2_mesh(tmp_path):
    """SparseGPT 2:4 as 2 processes x 2 CPU devices joined by jax.distributed (the mesh's data
    axis spans the processes, so the Hessians are summed across them) against 1 process x 4
    devices: the same masks and weights, bit for bit."""
    job = [sys.executable, "-m", "experiments.prune", "--config=configs/sparsegpt.py:runlocal",
           "--config.model=tiny-llama", "--config.pattern=2:4", "--config.mesh_data=2",
           "--config.mesh_model=2", "--config.save_checkpoint=True"]
    port = _free_port()
    launches = [job + ["--config.num_cpu_devices=2", "--config.distributed=True",
                       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                       f"--process_id={rank}", f"--config.workdir={tmp_path / 'two'}"]
                for rank in (0, 1)]
    launches.append(job + ["--config.num_cpu_devices=4", f"--config.workdir={tmp_path / 'one'}"])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAX_NUM_CPU_DEVICES", None)
    running = [subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for cmd in launches]
    outputs = [process.communicate(timeout=600) for process in running]
    for process, (_, err) in zip(running, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    assert "wrote" in outputs[0][0] and "wrote" not in outputs[1][0]  # process 0 writes
    rows = [json.loads((tmp_path / run / "results.json").read_text())["rows"][-1]
            for run in ("two", "one")]
    assert rows[0]["perplexity"] == rows[1]["perplexity"]
    two, one = (oneshot.restore_pruned(str(tmp_path / run / "checkpoint"))
                for run in ("two", "one"))
    masks = [m for m in jax.tree.leaves(two["masks"]) if m is not None]
    assert len(masks) == 7 * 2  # every linear layer of tiny-llama's 2 blocks
    jp.check_n_of_m_masks(two["masks"], "2:4")
    for got, want in zip(jax.tree.leaves(two), jax.tree.leaves(one), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("flags, message", [
    (["--process_id=0"], "--process_id join processes and need --config.distributed=True"),
    (["--config.distributed=True", "--num_processes=2", "--process_id=2"],
     "--process_id must be in [0, 2) (--num_processes), got 2"),
])
def test_process_flags_are_checked_before_jax_starts(flags, message):
    result = inprocess.run("experiments.prune", "--config=configs/wanda.py:runlocal",
                           "--config.model=tiny-llama", *flags)
    assert result.returncode != 0
    assert message in result.stderr


def test_restore_pruned_names_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "checkpoint.orbax-checkpoint-tmp-0").mkdir()
    with pytest.raises(FileNotFoundError, match="is not an orbax checkpoint directory"):
        oneshot.restore_pruned(str(tmp_path / "checkpoint"))
