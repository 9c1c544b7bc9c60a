r"""Structured pruning of SmolLM2-135M: depth against width at matched parameter counts, each
importance criterion, with and without a short logit distillation.

The distillation here is the CPU-sized one of docs/results.md: 32 steps of 4 x 256 tokens of
the Wikipedia text (32,768 tokens, about 3 minutes per point on 2 CPU cores), not Minitron's
billions of tokens; configs/structured.py keeps the longer 200 x 8 x 512 recipe for one run.

Launch (33 points, about 1.5 hours on 2 CPU cores; drop-one scores, 30 perplexity evaluations
of the calibration text, are computed once and shared by the points that use them):
  python -m experiments.sweep --config=configs/sweeps/structured_ablation.py \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/structured_ablation
Smoke run (tiny random model):
  python -m experiments.sweep --config=configs/sweeps/structured_ablation.py:runlocal \
      --config.workdir=/tmp/structured_ablation
"""

import ml_collections

from configs import structured
from configs.sweeps.points import chain, product
from jaxprune.structured import registry as criteria

# Every registered criterion, in the registries' order.
DEPTH_CRITERIA = tuple(criteria.DEPTH_CRITERIA)
WIDTH_CRITERIA = tuple(criteria.WIDTH_CRITERIA)


def _cut(name: str, runlocal: bool) -> dict:
    fields = dict(structured.CUTS[name])
    if runlocal:
        fields.update(structured.RUNLOCAL_CUTS.get(name, {}))
    return {f"cut.{k}": v for k, v in fields.items()}


def get_config(arg=None):
    """The sweep; ``arg="runlocal"`` runs it on the tiny random model."""
    runlocal = arg == "runlocal"
    config = ml_collections.ConfigDict()
    config.name = "Structured pruning of SmolLM2-135M: depth vs width"
    config.description = (
        "Perplexity (WikiText-2 raw test, 128 x 512) after cutting 4 or 8 blocks, fusing 4 "
        "pairs of blocks, or cutting the "
        "widths of about 4 blocks' parameters (MLP channels, query heads 9 -> 6, hidden "
        "576 -> 448), by each importance criterion, before and after 32 steps of logit "
        "distillation from the dense model (4 x 256 tokens per step, 32,768 tokens).")
    config.experiment = "structured"
    config.base = structured.get_config("dense")
    config.base.train.update(structured.SHORT_DISTILL)
    cuts = []
    for name in ("depth4", "depth8"):
        cuts += [{**_cut(name, runlocal), "cut.criterion": c} for c in DEPTH_CRITERIA]
    cuts.append(_cut("fuse4", runlocal))  # the layer-fusion baseline, 4 blocks fewer
    for name in ("mlp", "heads6", "hidden448"):
        cuts += [{**_cut(name, runlocal), "cut.criterion": c} for c in WIDTH_CRITERIA]
    # On the 2-block tiny model depth4 and depth8 both remove one block: keep one of each.
    cuts = [dict(items) for items in dict.fromkeys(tuple(cut.items()) for cut in cuts)]
    config.points = chain(
        [{"cut.kind": "none"}],
        [{**cut, **distill} for cut in cuts
         for distill in product(distill__enabled=[False, True])])
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting",
         "values": ("perplexity", "params_non_embedding", "tokens_per_second")})
    config.plot = ml_collections.ConfigDict(
        {"x": "params_non_embedding", "y": "perplexity", "series": "setting", "logy": True,
         "lines": False, "title": "SmolLM2-135M: structured cuts (WikiText-2)",
         "style": "structured"})
    config.workdir = ""
    # A workdir holding a sweep of another base config is refused; True moves it aside first.
    config.overwrite = False
    config.runlocal = runlocal
    config.runlocal_overrides = ()
    return config
