r"""Structured pruning of SmolLM2-135M, second step: layer fusion against dropping blocks, and
Minitron's budgeted search against the best depth-only and width-only shapes.

``fusion`` (20 points, about 80 minutes on 2 CPU cores): 4 and 8 blocks fewer by dropping
(block influence), by fusing as many pairs of consecutive blocks (the closest pairs by angular
distance) with the average, LaCo's merge or the rank-64 low-rank fit, or by folding the blocks
block influence drops into the kept block below them with the rank-64 fit; each cut only and
after the short distillation of the structured table.
``search`` (6 points, about 1.5 hours): budgets of 100M and 80M parameters, the search over
depth and width together, over depth alone and over width alone, each winner distilled as
every other cut is (the search's own ranking distillations come on top).

Launch:
  python -m experiments.sweep --config=configs/sweeps/fusion_search.py:fusion \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/fusion
  (the same with :search and --config.workdir=runs/search)
Smoke run (mini-llama, 4 random blocks: LaCo never fuses block 0, and a depth-only budget
needs blocks to remove):
  python -m experiments.sweep --config=configs/sweeps/fusion_search.py:fusion,runlocal \
      --config.workdir=/tmp/fusion
"""

import ml_collections

from configs import structured
from configs.sweeps.points import product
from jaxprune.structured import FUSION_METHODS

BUDGETS = (100_000_000, 80_000_000)
AXES = ("depth,width", "depth", "width")


def _fusion_points(runlocal: bool) -> list[dict]:
    sizes = (1,) if runlocal else (4, 8)
    # The new methods at both sizes first, then the baselines, dropping before averaging (a
    # stopped sweep has the new methods' rows; dropping and averaging at 4 blocks also have
    # rows in the structured ablation).
    fusions = [{"cut.kind": "fuse", "cut.criterion": "angular", "cut.blocks": n,
                "cut.fusion": fusion, **({"cut.rank": 8} if runlocal else {})}
               for fusion in reversed(FUSION_METHODS) for n in sizes]
    # The rank-64 fit folding the very blocks block influence drops into the block below each
    # run of them: fit against drop with the choice of blocks held fixed.
    folds = [{"cut.kind": "fuse", "cut.criterion": "block_influence", "cut.blocks": n,
              "cut.fusion": "lowrank", **({"cut.rank": 8} if runlocal else {})} for n in sizes]
    new = [cut for cut in fusions if cut["cut.fusion"] != "average"] + folds
    baselines = [{"cut.kind": "depth", "cut.criterion": "block_influence", "cut.blocks": n}
                 for n in sizes] + [cut for cut in fusions if cut["cut.fusion"] == "average"]
    # LaCo never fuses block 0: the smoke points need mini-llama's 4 blocks.
    model = {"model": "mini-llama"} if runlocal else {}
    return [{**model, **cut, **distill} for cut in new + baselines
            for distill in product(distill__enabled=[False, True])]


def _search_points(runlocal: bool) -> list[dict]:
    budgets = (623_000, 430_000) if runlocal else BUDGETS  # mini-llama: 820,352
    small = dict(tolerance=0.05, hidden_step=16, mlp_step=32, segments=2, shortlist=2,
                 rank_steps=2) if runlocal else {}
    model = {"model": "mini-llama"} if runlocal else {}  # a depth-only budget needs 4 blocks
    return [{**model, "cut.kind": "search", "cut.criterion": "activation",
             "distill.enabled": True,
             "cut.search.target_params": budget, "cut.search.axes": axes,
             **{f"cut.search.{k}": v for k, v in small.items()}}
            for budget in budgets for axes in AXES]


def get_config(arg=None):
    """``arg``: ``"fusion"`` (the default) or ``"search"``, optionally ``",runlocal"``."""
    parts = [p for p in (arg or "fusion").split(",") if p]
    which = [p for p in parts if p != "runlocal"]
    if len(which) != 1 or which[0] not in ("fusion", "search"):
        raise ValueError(f"configs/sweeps/fusion_search.py takes 'fusion' or 'search', "
                         f"optionally with ',runlocal', got {arg!r}")
    runlocal = "runlocal" in parts
    config = ml_collections.ConfigDict()
    config.experiment = "structured"
    config.base = structured.get_config("dense")
    config.base.train.update(structured.SHORT_DISTILL)
    if which[0] == "fusion":
        config.name = "Layer fusion of SmolLM2-135M against dropping blocks"
        config.description = (
            "WikiText-2 perplexity (128 x 512) with 4 or 8 blocks fewer: dropped by block "
            "influence, or as many pairs fused (average, LaCo, low-rank 64), before and after "
            "32 steps of logit distillation (4 x 256 tokens per step).")
        config.points = _fusion_points(runlocal)
    else:
        config.name = "Minitron's budgeted search on SmolLM2-135M"
        config.description = (
            "WikiText-2 perplexity (128 x 512) of the best shape within 2% of 100M and 80M "
            "parameters over depth and width, depth alone or width alone, after the same "
            "32-step distillation.")
        config.points = _search_points(runlocal)
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting",
         "values": ("perplexity", "perplexity_before", "params")})
    config.plot = ml_collections.ConfigDict(
        {"x": "params_non_embedding", "y": "perplexity", "series": "setting", "logy": True,
         "lines": False, "title": config.name, "style": "structured"})
    config.workdir = ""
    # A workdir holding a sweep of another base config is refused; True moves it aside first.
    config.overwrite = False
    config.runlocal = runlocal
    config.runlocal_overrides = ()
    return config
