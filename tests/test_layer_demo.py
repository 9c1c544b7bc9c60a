"""The synthetic-layer demo of the core, shrunk by its runlocal switch."""

import json
import os

from configs import layer_demo as demo_config
from experiments import common
from tests import inprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_orders_criteria_as_expected():
    config = common.apply_runlocal(demo_config.get_config("runlocal"))
    assert config.in_features == 64  # the smoke-run size
    rows = inprocess.load("experiments.layer_demo").run_demo(config)
    error = {(r["criterion"], r["pattern"]): r["relative_output_error"] for r in rows}
    for pattern in config.patterns:
        # With outlier input features, weighting by input norm beats magnitude beats random.
        assert error["input_weighted", pattern] < error["magnitude", pattern]
        assert error["magnitude", pattern] < error["random", pattern]
    assert {round(r["sparsity"], 6) for r in rows} == {0.5}


def test_demo_binary_prints_table_and_writes_json(tmp_path):
    result = inprocess.run("experiments.layer_demo", "--config=configs/layer_demo.py:runlocal",
                           f"--config.workdir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "| criterion | unstructured | per_output | global | 2:4 | 4:8 |" in result.stdout
    payload = json.loads((tmp_path / "results.json").read_text())
    assert len(payload["rows"]) == 15
    # The results, the work directory's record of the config and its lock file; no temporaries.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "results.json", "run.json"]


def test_demo_refuses_a_bad_override():
    result = inprocess.run("experiments.layer_demo", "--config=configs/layer_demo.py:runlocal",
                           "--config.sparsity=1.5")
    assert result.returncode != 0
    assert "config.sparsity must be in [0, 1), got 1.5" in result.stderr
