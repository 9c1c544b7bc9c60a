"""Sweeps: point resolution, bad overrides, atomic rows, resume after SIGKILL, reports."""

import glob
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from configs.sweeps import oneshot_table, sparsity_curve
from configs.sweeps import points as sweep_points
from experiments import common, sweep_report
from experiments import sweep_runner as sweep
from jaxprune.eval.tasks import PAPER_TASKS
from tests import inprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = "configs/sweeps/oneshot_table.py:runlocal"


def sweep_command(workdir, *extra):
    return [sys.executable, "-m", "experiments.sweep", f"--config={TABLE}",
            f"--config.workdir={workdir}", *extra]


def run_sweep_binary(workdir, *extra):
    """The sweep binary in this process (tests/inprocess.py); a kill needs ``sweep_command``."""
    return inprocess.run(*sweep_command(workdir, *extra)[2:])


def started_points(log: str) -> list[int]:
    """Indices of the points a sweep's log says it started."""
    return [int(line.split("] point ")[1].split(" ")[0]) for line in log.splitlines()
            if "] point " in line and "to run)" in line]


def test_product_chain_and_with_fields():
    points = sweep_points.product(method=["wanda", "sparsegpt"], eval__max_windows=[16, 128])
    assert points == [
        {"method": "wanda", "eval.max_windows": 16}, {"method": "wanda", "eval.max_windows": 128},
        {"method": "sparsegpt", "eval.max_windows": 16},
        {"method": "sparsegpt", "eval.max_windows": 128}]
    assert sweep_points.with_fields([{"a": 1}], b__c=2) == [{"a": 1, "b.c": 2}]
    assert sweep_points.chain([{"a": 1}], [{"a": 2}, {"a": 3}]) == [{"a": 1}, {"a": 2}, {"a": 3}]
    with pytest.raises(ValueError, match="sweep axis 'sparsity' needs a non-empty list"):
        sweep_points.product(sparsity=[])


@pytest.mark.parametrize("module", [oneshot_table, sparsity_curve])
def test_sweep_configs_resolve_to_distinct_checked_points(module):
    config = module.get_config()
    config.base.calibration.path = "calibration.txt"  # as the launch command sets them
    config.base.eval.path = "wikitext-2-raw"
    resolved = sweep.resolve_points(config)
    assert len(resolved) == len(config.points)
    assert len({fingerprint for _, _, fingerprint in resolved}) == len(resolved)
    assert resolved[0][1].method == "dense"
    assert all(cfg.model == "smollm2-135m" and not cfg.runlocal for _, cfg, _ in resolved)
    small = sweep.resolve_points(common.apply_runlocal(module.get_config("runlocal")))
    assert all(cfg.model == "tiny-llama" and cfg.eval.max_windows == 2 for _, cfg, _ in small)


@pytest.mark.parametrize("name", ["training_study", "structured_ablation"])
def test_other_sweeps_resolve_in_their_smoke_size(name):
    module = importlib.import_module(f"configs.sweeps.{name}")
    resolved = sweep.resolve_points(common.apply_runlocal(module.get_config("runlocal")))
    assert len({fingerprint for _, _, fingerprint in resolved}) == len(resolved) > 5
    assert all(cfg.model == "tiny-llama" for _, cfg, _ in resolved)
    if name == "structured_ablation":
        full = module.get_config()
        # dense + (2 depth x 3 + fusion + 3 width x 3) x {cut only, distilled}
        assert len(full.points) == 33


def test_the_gemma3_sweeps_resolve_on_gemma3():
    from configs.sweeps import structured_gemma3

    for config, count in ((oneshot_table.get_config("gemma3"), 10),
                          (structured_gemma3.get_config(), 4)):
        config.base.calibration.path = "calibration.txt"  # as the launch commands set them
        config.base.eval.path = "wikitext-2-raw"
        if "train" in config.base:
            config.base.train.path = "calibration.txt"
        resolved = sweep.resolve_points(config)
        assert len({fingerprint for _, _, fingerprint in resolved}) == len(resolved) == count
        assert all(cfg.model == "gemma3-270m" for _, cfg, _ in resolved)
    small = sweep.resolve_points(common.apply_runlocal(structured_gemma3.get_config("runlocal")))
    assert [cfg.cut.blocks or cfg.cut.mlp_channels for _, cfg, _ in small] == [1, 1, 96, 96]
    with pytest.raises(ValueError, match="takes 'runlocal' or 'gemma3', got 'gemma2'"):
        oneshot_table.get_config("gemma2")


def test_the_structured_zeroshot_sweep_scores_both_cuts_before_and_after_distilling():
    from configs.sweeps import zeroshot_structured

    config = zeroshot_structured.get_config()
    for field in ("calibration", "train", "eval"):
        config.base[field].path = "text"  # as the launch command sets them
    resolved = [cfg for _, cfg, _ in sweep.resolve_points(config)]
    assert [(c.cut.kind, c.cut.blocks, c.cut.mlp_channels) for c in resolved] == [
        ("depth", 4, 0), ("width", 0, 1264)]
    assert all(c.distill.enabled and c.eval.zeroshot.limit == 1000 and c.train.steps == 32
               for c in resolved)
    assert resolved[0].eval.zeroshot.tasks.split(",") == list(PAPER_TASKS)


@pytest.mark.parametrize("part, count", [("fusion", 20), ("search", 6)])
def test_the_fusion_and_search_sweeps_resolve_to_checked_points(part, count):
    from configs.sweeps import fusion_search

    config = fusion_search.get_config(part)
    for field in ("calibration", "train", "eval"):
        config.base[field].path = "text"  # as the launch command sets them
    resolved = [cfg for _, cfg, _ in sweep.resolve_points(config)]
    assert len(resolved) == count and all(c.model == "smollm2-135m" for c in resolved)
    if part == "search":
        assert {(c.cut.search.target_params, c.cut.search.axes) for c in resolved} == {
            (b, a) for b in (100_000_000, 80_000_000)
            for a in ("depth,width", "depth", "width")}
    else:
        assert {c.cut.fusion for c in resolved if c.cut.kind == "fuse"} == {
            "average", "laco", "lowrank"}
        assert {(c.cut.criterion, c.cut.blocks, c.distill.enabled) for c in resolved
                if c.cut.kind == "fuse" and c.cut.criterion == "block_influence"} == {
            ("block_influence", n, d) for n in (4, 8) for d in (False, True)}
    small = sweep.resolve_points(common.apply_runlocal(fusion_search.get_config(
        f"{part},runlocal")))
    assert all(cfg.model == "mini-llama" for _, cfg, _ in small)
    with pytest.raises(ValueError, match="takes 'fusion' or 'search'"):
        fusion_search.get_config("both")


def test_sparsity_curve_points():
    config = sparsity_curve.get_config()
    assert config.points[0] == {"method": "dense"}
    for method in ("magnitude", "wanda", "sparsegpt"):
        sparsities = [p["sparsity"] for p in config.points if p["method"] == method]
        assert sparsities == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


@pytest.mark.parametrize(
    "point, message",
    [
        ({"eval.windw": 3}, "config has no field 'eval.windw'"),
        ({"evaluation.window": 3}, "config field 'evaluation' (from override 'evaluation.window')"),
        ({"sparsity": "half"}, "config.points[1].sparsity cannot be set to 'half'"),
        ({"eval.window": 2.5}, "config.points[1].eval.window cannot be set to 2.5"),
        ({"method": "gptq"}, "config.points[1].method must be 'dense' or one of"),
        ({"pattern": "2:3"}, "config.points[1].pattern='2:3' keeps 2 of every 3 weights, so "
                             "config.base.sparsity must be 1 - N/M = 0.33333333333333337, got "
                             "0.5; add --config.base.sparsity=0.33333333333333337"),
    ],
)
def test_bad_point_override_names_point_and_field(point, message):
    config = oneshot_table.get_config("runlocal")
    config.points = [{"method": "dense"}, point]
    with pytest.raises(ValueError) as error:
        sweep.resolve_points(config)
    assert "sweep point 1" in str(error.value) and message in str(error.value)


def test_duplicate_points_are_refused():
    config = oneshot_table.get_config("runlocal")
    config.points = [{"method": "wanda"}, {"method": "wanda", "pattern": "per_output"}]
    with pytest.raises(ValueError, match="sweep points 0 and 1 resolve to the same config"):
        sweep.resolve_points(config)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.base.eval.windw=3", "--config.base.eval.windw=3): no such config field: "
                                       "'windw' Did you mean \"window\""),
        ("--config.base.sparsity=half", "config.base.sparsity"),
        ("--config.base.sparsity=1.5", "sparsity must be in [0, 1)"),
        ("--config.base.layers=cross_attn", "matches no prunable kernel"),
        ("--config.table.values=()", "config.table.values must be a non-empty tuple"),
    ],
)
def test_bad_command_line_override_fails_before_any_work(tmp_path, override, message):
    result = run_sweep_binary(tmp_path / "sweep", override)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep").exists()  # nothing was written


def test_set_field_keeps_types_and_names_the_field():
    config = oneshot_table.get_config().base
    common.set_field(config, "eval.max_windows", 7)
    common.set_field(config, "sparsity", 1)  # an int where a float is expected is fine
    assert config.eval.max_windows == 7 and config.sparsity == 1.0
    with pytest.raises(ValueError, match=r"config.eval.batch_size cannot be set to '8' \(str\)"):
        common.set_field(config, "eval.batch_size", "8")


def test_every_config_shrinks_with_runlocal_true():
    files = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
    files += sorted(glob.glob(os.path.join(REPO, "configs", "sweeps", "*.py")))
    checked = 0
    for path in files:
        name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        module = importlib.import_module(name)
        if not hasattr(module, "get_config"):
            continue
        config = module.get_config()
        assert not config.runlocal, name
        # A sweep may leave the shrinking to its base config's own overrides.
        assert config.runlocal_overrides or config.base.runlocal_overrides, name
        config.runlocal = True  # as --config.runlocal=True does, after get_config
        shrunk = common.apply_runlocal(config)
        for dotted, value in config.runlocal_overrides:
            node = shrunk
            for part in dotted.split("."):
                node = node[part]
            assert node == value, (name, dotted)
        checked += 1
    assert checked == 31  # 13 job configs, 6 benchmarks, 2 checks (harness, exports), 10 sweeps


def test_explicit_overrides_win_over_runlocal():
    config = oneshot_table.get_config().base
    config.runlocal = True
    config.eval.max_windows = 7
    assert common.apply_runlocal(config).eval.max_windows == 2
    kept = common.apply_runlocal(config, common.command_line_fields(
        ["prog", "--config.eval.max_windows=7", "--other=1"]))
    assert kept.eval.max_windows == 7 and kept.eval.source == "pydoc"
    sweep_config = oneshot_table.get_config("runlocal")
    sweep_config.base.eval.max_windows = 5
    resolved = sweep.resolve_points(common.apply_runlocal(sweep_config),
                                    {"base.eval.max_windows"})
    assert {cfg.eval.max_windows for _, cfg, _ in resolved} == {5}


def test_append_row_keeps_earlier_rows_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "results.jsonl")
    sweep.append_row(path, {"point": 0, "metrics": {"perplexity": 1.5}})
    sweep.append_row(path, {"point": 1, "metrics": {"perplexity": 2.5}})
    assert [r["point"] for r in sweep.read_rows(path)] == [0, 1]
    assert os.listdir(tmp_path) == ["results.jsonl"]


def fake_row(point, method, setting, sparsity, perplexity):
    return {"point": point, "metrics": {"method": method, "setting": setting,
                                        "sparsity": sparsity, "perplexity": perplexity},
            "timings": {"prune_seconds": 1.0}, "peak_memory_mb": 100.0}


def test_pivot_places_each_point_in_its_cell():
    rows = [fake_row(0, "dense", "dense", 0.0, 30.0), fake_row(1, "wanda", "50%", 0.5, 70.5),
            fake_row(2, "wanda", "2:4", 0.5, 215.7), fake_row(3, "sparsegpt", "50%", 0.5, 61.9)]
    lines, columns, cells = sweep_report.pivot(rows, "method", "setting", "perplexity")
    assert lines == ["dense", "wanda", "sparsegpt"] and columns == ["dense", "50%", "2:4"]
    assert cells == {("dense", "dense"): 30.0, ("wanda", "50%"): 70.5, ("wanda", "2:4"): 215.7,
                     ("sparsegpt", "50%"): 61.9}
    config = oneshot_table.get_config()
    text = sweep_report.pivot_markdown(config, rows)
    assert "| wanda |  | 70.50 | 215.70 |" in text and "| sparsegpt |  | 61.90 |  |" in text
    with pytest.raises(ValueError, match="two sweep points fall into the cell"):
        sweep_report.pivot(rows + [fake_row(4, "wanda", "50%", 0.5, 1.0)], "method", "setting",
                           "perplexity")


def test_plot_keeps_points_whose_other_metrics_are_nan_and_drops_a_nan_y(tmp_path,
                                                                         monkeypatch):
    rows = [fake_row(0, "dense", "dense", 0.0, 30.0), fake_row(1, "wanda", "50%", 0.5, 70.5),
            fake_row(2, "wanda", "2:4", 0.5, float("nan"))]
    rows[1]["metrics"]["zeroshot rte acc stderr"] = float("nan")  # one document: no spread
    for row in rows:
        row.update(git="abc", machine={"platform": "Linux", "cpus": 2}, packages={"jax": "0"})
    plotted = []
    monkeypatch.setattr(sweep_report, "plot_png",
                        lambda sweep, points: plotted.extend(points) or b"png")
    config = oneshot_table.get_config()
    config.workdir = str(tmp_path)
    sweep_report.write_reports(config, rows)
    assert [r["point"] for r in plotted] == [0, 1]


def test_sweep_resumes_after_sigkill_and_matches_an_uninterrupted_run(tmp_path):
    """Kill the sweep with SIGKILL inside point 5 (OBD 50%), restart it, compare."""
    full = run_sweep_binary(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    assert started_points(full.stderr) == list(range(13))

    workdir = tmp_path / "killed"
    progress = workdir / sweep.PROGRESS
    process = subprocess.Popen(sweep_command(workdir), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=dict(os.environ,
                                                                   JAX_PLATFORMS="cpu"))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["point"] == 5:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads(progress.read_text())["point"] == 5
    finished = sweep.read_rows(str(workdir / sweep.RESULTS))
    assert [row["point"] for row in finished] == [0, 1, 2, 3, 4]  # the kill was inside point 5
    assert not (workdir / "results.md").exists()

    resumed = run_sweep_binary(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "13 points, 5 done already, 8 to run" in resumed.stderr
    assert started_points(resumed.stderr) == list(range(5, 13))  # only what was left

    rows = {name: json.loads((tmp_path / name / "results.json").read_text())["rows"]
            for name in ("full", "killed")}
    assert [r["point"] for r in rows["killed"]] == list(range(13))
    # The same config and seed give the same metrics, bit for bit (JSON keeps every float bit).
    assert [r["metrics"] for r in rows["killed"]] == [r["metrics"] for r in rows["full"]]
    assert [r["fingerprint"] for r in rows["killed"]] == [r["fingerprint"] for r in rows["full"]]
    assert rows["killed"][:5] == finished  # finished rows were kept, not redone
    table = oneshot_table.get_config()
    perplexity_table = {name: sweep_report.pivot_markdown(table, rows[name]).split("\n\n")[0]
                        for name in rows}
    assert perplexity_table["killed"] == perplexity_table["full"]
    assert perplexity_table["full"] in (tmp_path / "full" / "results.md").read_text()
    for name in ("full", "killed"):
        assert (tmp_path / name / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not (tmp_path / name / sweep.PROGRESS).exists()
    row = rows["full"][1]
    assert row["seeds"] == {"calibration.seed": 0}
    assert row["git"] and row["packages"]["jax"] and row["peak_memory_mb"] > 0
    assert row["timings"]["wall_seconds"] > 0 and row["config"]["model"] == "tiny-llama"


class KeepingModule:
    """A job whose points keep partial work in the folder the sweep gives them, and whose
    point ``fail_at`` dies after keeping it (a kill)."""

    def __init__(self, fail_at=None):
        self.fail_at, self.kept_before = fail_at, {}

    def run_point(self, config, resources, *, keep_dir):
        path = os.path.join(keep_dir, "zeroshot", "rte.json")
        self.kept_before[config.point] = os.path.exists(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("{}")
        if config.point == self.fail_at:
            raise KeyboardInterrupt
        return {"metrics": {"point": config.point}, "timings": {}}


def test_a_point_keeps_partial_work_until_its_row_is_written(tmp_path):
    import ml_collections

    config = ml_collections.ConfigDict({"workdir": str(tmp_path)})
    resolved = [({"x": i}, ml_collections.ConfigDict({"point": i}), f"fp{i}") for i in range(3)]
    first = KeepingModule(fail_at=1)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_points(config, resolved, [0, 1, 2], first, None, {})
    assert [r["point"] for r in sweep.read_rows(str(tmp_path / sweep.RESULTS))] == [0]
    assert os.listdir(tmp_path / sweep.UNFINISHED) == ["fp1"]  # point 0's went with its row
    assert (tmp_path / sweep.UNFINISHED / "fp1" / "zeroshot" / "rte.json").exists()

    again = KeepingModule()
    sweep.run_points(config, resolved, [1, 2], again, None, {})
    assert again.kept_before == {1: True, 2: False}  # point 1 found its own partial work
    assert not (tmp_path / sweep.UNFINISHED).exists()


def test_dry_run_lists_points_without_running(tmp_path):
    result = run_sweep_binary(tmp_path / "dry", "--dry_run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count(" todo ") == 13
    assert not (tmp_path / "dry" / sweep.RESULTS).exists()


def test_the_published_beyond_rows_resume_under_the_committed_config():
    """Rows written before later fields existed keep their fingerprints (the sweep skips them)."""
    from configs.sweeps import beyond_table

    with open(os.path.join(REPO, "docs", "data", "sweep_beyond_table.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    config = beyond_table.get_config()
    config.base.calibration.path = rows[0]["config"]["calibration"]["path"]
    config.base.eval.path = rows[0]["config"]["eval"]["path"]
    fingerprints = {fingerprint for _, _, fingerprint in sweep.resolve_points(config)}
    assert len(rows) >= 11
    assert {row["fingerprint"] for row in rows} <= fingerprints


def test_the_beyond_zeroshot_points_are_points_of_the_perplexity_table():
    """The zero-shot sweep scores a subset of the table's points, each with all paper tasks."""
    from configs.sweeps import beyond_table

    config = beyond_table.get_config("zeroshot")
    table_points = beyond_table.beyond_points()
    assert config.points[0] == {"method": "dense"}
    assert all(point in table_points for point in config.points)
    assert {(p["pattern"] == "2:4", p["sparsity"]) for p in config.points[1:]} == {
        (True, 0.5), (False, 0.7)}  # the columns the aim names
    assert config.base.eval.zeroshot.tasks.split(",") == list(PAPER_TASKS)
    assert "zeroshot mean" in config.table["values"]
    assert "zeroshot mean" not in beyond_table.get_config().table["values"]


def test_categorical_plot_keeps_every_series_and_point_apart():
    """15 series over three settings (the beyond table): no two series share a colour and a
    marker, and no two points of a setting share an x position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from configs.sweeps import beyond_table

    config = beyond_table.get_config()
    rows = [{"metrics": {"method": f"m{i}", "setting": setting, "perplexity": 50.0}}
            for i in range(15) for setting in ("50%", "70%", "2:4")]
    figure, axes = plt.subplots()
    sweep_report._plot_categorical(axes, config.plot, rows, ["50%", "70%", "2:4"])
    lines = axes.get_lines()
    assert len(lines) == 15
    assert len({(line.get_color(), line.get_marker()) for line in lines}) == 15
    xs = [x for line in lines for x in line.get_xdata()]
    assert len(set(xs)) == 45 and all(-0.5 < x < 2.5 for x in xs)
    assert all(line.get_linestyle() == "None" for line in lines)  # settings have no order
    plt.close(figure)
