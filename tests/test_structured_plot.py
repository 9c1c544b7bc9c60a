"""The structured-pruning figure: cut kinds, the Pareto front, and a figure from saved rows."""

import itertools
import json
import os

import numpy as np
import pytest

from experiments import structured_plot, sweep_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED = os.path.join(REPO, "docs", "data", "sweep_structured_ablation.json")


def row(kind="depth", criterion="angular", distilled=False, size=92e6, perplexity=50.0,
        method="m", **cut):
    return {"config": {"cut": {"kind": kind, "criterion": criterion, **cut},
                       "distill": {"enabled": distilled}},
            "metrics": {"params_non_embedding": size, "perplexity": perplexity,
                        "method": method}}


@pytest.mark.parametrize("cut, kind", [
    (dict(kind="none"), "dense"),
    (dict(kind="depth", blocks=4), "depth"),
    (dict(kind="width", mlp_channels=1264), "width MLP"),
    (dict(kind="width", heads_per_group=2), "width heads"),
    (dict(kind="width", hidden=448), "width hidden"),
    (dict(kind="fuse", fusion="lowrank"), "fuse lowrank"),
    (dict(kind="search"), "search"),
])
def test_cut_kind_names_each_cut(cut, kind):
    assert structured_plot.cut_kind(row(**cut)) == kind


def test_pareto_front_is_the_undominated_points():
    rng = np.random.default_rng(3)
    points = [(float(s), float(p)) for s, p in zip(rng.integers(70, 110, 40),
                                                   rng.uniform(20, 500, 40), strict=True)]
    # Independent reference: a point is on the front when no other point is at most as large
    # and at most as bad, and better in one of the two.
    expected = sorted({p for p in points if not any(
        q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)})
    front = structured_plot.pareto_front(points)
    assert front == expected
    assert all(a[0] < b[0] and a[1] > b[1] for a, b in itertools.pairwise(front))


def test_the_figure_of_the_saved_ablation_marks_every_cut(tmp_path):
    """From docs' raw rows: every kind has a marker and every criterion a colour; the CLI
    writes the PNG."""
    with open(SAVED) as f:
        rows = json.load(f)["rows"]
    kinds = {structured_plot.cut_kind(r) for r in rows}
    assert {"dense", "depth", "fuse average", "width MLP", "width heads",
            "width hidden"} == kinds
    assert kinds - {"dense"} <= set(structured_plot.MARKERS)
    assert {r["config"]["cut"]["criterion"] for r in rows if r["config"]["cut"]["kind"] != "none"
            } <= set(structured_plot.COLORS)
    out = tmp_path / "figure.png"
    assert structured_plot.main([f"--rows={SAVED}", f"--out={out}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_asks_for_the_structured_figure_and_a_bad_style_is_refused():
    from configs.sweeps import fusion_search, structured_ablation

    for config in (structured_ablation.get_config(), fusion_search.get_config("fusion")):
        assert config.plot.style == "structured"
        sweep_report.check_report_config(config)
    config = structured_ablation.get_config()
    config.plot.style = "scatter"
    with pytest.raises(ValueError, match="config.plot.style must be one of"):
        sweep_report.check_report_config(config)
    png = sweep_report.plot_png(structured_ablation.get_config(),
                                [row(kind="none", size=106e6, perplexity=30.0),
                                 row(), row(distilled=True, perplexity=40.0)])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
