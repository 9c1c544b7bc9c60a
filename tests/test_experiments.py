"""Experiment binaries, run through their runlocal switches on the real model."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_binary(*args):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=900,
        check=False, env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


@pytest.mark.real_model
def test_demo_prints_perplexity_and_completion():
    result = run_binary("experiments.demo", "--config=configs/demo.py:runlocal")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smollm2-135m: 134.5M parameters, 30 blocks" in result.stdout
    assert "dense perplexity on pydoc:test (2 windows of 128 tokens)" in result.stdout
    assert "greedy completion: 'The capital of France is Paris" in result.stdout


@pytest.mark.real_model
def test_perplexity_binary_writes_json(tmp_path):
    result = run_binary("experiments.perplexity", "--config=configs/perplexity.py:runlocal",
                        f"--config.workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "perplexity.json").read_text())
    assert payload["result"]["windows"] == 2 and payload["result"]["window"] == 128
    assert 1.0 < payload["result"]["perplexity"] < 100.0
    assert f"| {payload['result']['perplexity']:.4f} |" in result.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.eval.source=c4", "config.eval.source must be one of"),
        ("--config.eval.window=1", "config.eval.window must be an integer >= 2, got 1"),
        ("--config.param_dtype=float16", "config.param_dtype must be one of"),
        ("--config.eval.source=wikitext2", "config.eval.path is required for source 'wikitext2'"),
    ],
)
def test_bad_config_fails_before_loading_the_model(override, message):
    result = run_binary("experiments.perplexity", "--config=configs/perplexity.py:runlocal",
                        override)
    assert result.returncode != 0
    assert message in result.stderr
    assert "loaded" not in result.stderr
