"""One-shot pruning on a device mesh (8 fake CPU devices) equals one device."""

import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from jaxprune import models, oneshot

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
