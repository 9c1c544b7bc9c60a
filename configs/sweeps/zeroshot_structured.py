r"""The structured rows of docs/results.md's zero-shot table: SmolLM2-135M with 4 blocks fewer
(block influence) and with MLP channels 1536 -> 1264 (activation importance), each scored on
the seven zero-shot tasks before and after the short distillation of the structured table.

One point per cut: the structured job scores the cut model before distilling it (the row's
``... before`` keys) and the distilled student after, so each point gives both rows.

Launch (2 points, about 50 minutes each on 2 CPU cores at 1,000 documents per task):
  python -m experiments.sweep --config=configs/sweeps/zeroshot_structured.py \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/zeroshot_structured
Smoke run (tiny random model, one document of each task):
  python -m experiments.sweep --config=configs/sweeps/zeroshot_structured.py:runlocal \
      --config.workdir=/tmp/zeroshot_structured
"""

import ml_collections

from configs import structured
from jaxprune.eval.tasks import PAPER_TASKS

CUTS = ("depth4", "mlp")


def get_config(arg=None):
    """The sweep; ``arg="runlocal"`` runs it on the tiny random model."""
    runlocal = arg == "runlocal"
    config = ml_collections.ConfigDict()
    config.name = "Zero-shot accuracy after structured cuts of SmolLM2-135M"
    config.description = (
        "lm-evaluation-harness's seven zero-shot tasks (first 1,000 documents of each) and "
        "WikiText-2 perplexity after cutting 4 blocks or MLP channels 1536 -> 1264, before "
        "and after 32 steps of logit distillation (4 x 256 tokens per step).")
    config.experiment = "structured"
    config.base = structured.get_config("dense")
    config.base.train.update(structured.SHORT_DISTILL)
    config.base.distill.enabled = True
    config.base.eval.zeroshot.tasks = ",".join(PAPER_TASKS)
    config.base.eval.zeroshot.limit = 1000
    config.points = [
        {f"cut.{k}": v for k, v in {**structured.CUTS[name],
                                     **(structured.RUNLOCAL_CUTS[name] if runlocal else {})
                                     }.items()}
        for name in CUTS]
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting",
         "values": ("zeroshot mean before", "zeroshot mean", "perplexity_before",
                    "perplexity")})
    config.plot = ml_collections.ConfigDict(
        {"x": "method", "y": "zeroshot mean", "series": "setting", "logy": False,
         "lines": False, "title": "SmolLM2-135M: zero-shot mean after structured cuts"})
    config.workdir = ""
    # A workdir holding a sweep of another base config is refused; True moves it aside first.
    config.overwrite = False
    config.runlocal = runlocal
    config.runlocal_overrides = (("base.eval.zeroshot.limit", 1),)
    return config
