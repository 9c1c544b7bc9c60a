"""The training binary: runlocal runs, resume after SIGKILL, bad input, the study sweep."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import gradual
from configs.sweeps import training_study
from experiments import common
from experiments import sweep_runner as sweep
from tests import inprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def train_command(*args):
    return [sys.executable, "-m", "experiments.train", *args]


def run_train(*args):
    """The binary in this process (tests/inprocess.py); a kill needs ``train_command``."""
    return inprocess.run("experiments.train", *args)


def test_resume_after_sigkill_gives_the_same_results_curve_and_parameters(tmp_path):
    """Checkpoints every 7 steps, logs every 10: the kill lands between a checkpoint (14) and
    the next logged step (20), so the resumed run must restore the losses of steps 11-14. The
    uninterrupted run checkpoints every 20 steps (the smoke setting): how often a run saves
    must not change what it computes either."""
    config = ["--config=configs/gradual.py:rigl,runlocal", "--config.train.checkpoint_every=7"]
    full = run_train(*config[:1], f"--config.workdir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]

    workdir = tmp_path / "killed"
    process = subprocess.Popen(train_command(*config, f"--config.workdir={workdir}"), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    checkpoint = workdir / "checkpoints" / "14"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and not checkpoint.is_dir():
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed, not finished
    assert not (workdir / "results.json").exists()

    resumed = run_train(*config, f"--config.workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the checkpoint of step" in resumed.stderr
    def results_of(directory):
        payload = json.loads((directory / "results.json").read_text())
        del payload["config"]["workdir"]  # the differences between the two runs
        del payload["config"]["train"]["checkpoint_every"]
        return payload

    results = {name: results_of(tmp_path / name) for name in ("full", "killed")}
    # Everything, the whole loss curve and final_loss included, bit for bit.
    assert results["killed"] == results["full"]
    assert [step for step, _ in results["full"]["curve"]] == [10, 20, 30, 40]
    assert results["full"]["metrics"]["sparsity"] == pytest.approx(0.8, abs=2e-3)
    png = {name: (tmp_path / name / "loss.png").read_bytes() for name in ("full", "killed")}
    assert png["full"][:4] == b"\x89PNG" and png["killed"] == png["full"]

    # A rerun of the finished run restores its last checkpoint and writes the same results.
    rerun = run_train(*config, f"--config.workdir={workdir}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert results_of(workdir) == results["full"]

    # Another config in the same workdir stops before any work, naming what differs.
    other = run_train(*config, "--config.train.learning_rate=0.001",
                      f"--config.workdir={workdir}")
    assert other.returncode != 0
    assert "train.learning_rate: 0.003 -> 0.001" in other.stderr
    assert "--config.overwrite=True" in other.stderr and "step 10/40" not in other.stderr
    assert results_of(workdir) == results["full"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.sparsity.begin=500", "the schedule's end must come after its begin, got "
                                        "begin=500, end=350"),
        ("--config.sparsity.update_every=0", "update_every must be >= 1, got 0"),
        ("--config.sparsity.final=1.0", "final_sparsity must be in [0, 1)"),
        ("--config.rule=obs", "config.rule='obs' is not one of"),
        ("--config.train.steps=0", "config.train.steps must be an integer >= 1, got 0"),
    ],
)
def test_bad_training_config_fails_before_training(tmp_path, override, message):
    result = run_train("--config=configs/gradual.py", "--config.train.source=pydoc",
                       "--config.eval.source=pydoc", f"--config.workdir={tmp_path / 'w'}",
                       override)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "step 1" not in result.stderr and not (tmp_path / "w").exists()


def test_config_argument_is_checked():
    with pytest.raises(ValueError, match="takes one rule of"):
        gradual.get_config("lottery")
    assert gradual.get_config("set,runlocal").rule == "set"


def test_training_study_sweep_runs_every_rule(tmp_path):
    config = common.apply_runlocal(training_study.get_config("runlocal"))
    config.workdir = str(tmp_path)
    rows = sweep.run_sweep(config)
    by_rule = {row["metrics"]["method"]: row["metrics"] for row in rows}
    assert sorted(by_rule) == sorted(gradual.RULES)
    assert by_rule["dense"]["sparsity"] < 0.01
    for rule in ("gradual", "ste", "snip", "set", "rigl"):
        assert by_rule[rule]["sparsity"] >= 0.79, rule  # exact zeros among the kernels
    assert all(1.0 < m["perplexity"] < 300 for m in by_rule.values())
    assert (tmp_path / "results.png").exists() and (tmp_path / "results.md").exists()
