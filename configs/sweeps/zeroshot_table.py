r"""The zero-shot table of docs/results.md: the seven tasks of the pruning papers after
one-shot pruning of SmolLM2-135M, beside WikiText-2 perplexity.

Launch (the first 1,000 documents of each task: dense, Wanda and SparseGPT at 50% and 2:4):
  python -m experiments.sweep --config=configs/sweeps/zeroshot_table.py \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/zeroshot_table
Every document (dense, SparseGPT at 50% and 2:4): the same with
  --config=configs/sweeps/zeroshot_table.py:full --config.workdir=runs/zeroshot_table_full
Smoke run (tiny random model, built-in text, one document of each task):
  python -m experiments.sweep --config=configs/sweeps/zeroshot_table.py:runlocal \
      --config.workdir=/tmp/zeroshot_table
"""

import ml_collections

from configs.oneshot_base import UNSTRUCTURED_GROUP, oneshot_config
from configs.sweeps.points import chain
from jaxprune.eval.tasks import PAPER_TASKS


def get_config(arg=None):
    """``arg``: ``"full"`` (every document; dense and SparseGPT only) and/or ``"runlocal"``."""
    parts = [p for p in (arg or "").split(",") if p]
    if any(p not in ("full", "runlocal") for p in parts):
        raise ValueError(f"configs/sweeps/zeroshot_table.py takes 'full' and/or 'runlocal', "
                         f"got {arg!r}")
    full = "full" in parts
    methods = ("sparsegpt",) if full else ("sparsegpt", "wanda")
    config = ml_collections.ConfigDict()
    config.name = "Zero-shot accuracy after one-shot pruning: 50% and 2:4"
    config.description = (
        "lm-evaluation-harness's seven zero-shot tasks (acc; mean over the seven) "
        + ("on every document" if full else "on the first 1,000 documents of each task")
        + " and WikiText-2 perplexity, after one-shot pruning calibrated on 64 x 512 tokens.")
    config.experiment = "prune"
    config.base = oneshot_config("wanda", "per_output")
    config.base.eval.zeroshot.tasks = ",".join(PAPER_TASKS)
    config.base.eval.zeroshot.limit = None if full else 1000
    # The pruned points first, dense last: a sweep stopped part-way (one point takes 15 to
    # 20 minutes on 2 cores at 1,000 documents) resumes at the first point without a row, and
    # dense figures also come from the zeroshot binary's run on every document.
    config.points = chain(
        *([{"method": m, "pattern": UNSTRUCTURED_GROUP[m]}, {"method": m, "pattern": "2:4"}]
          for m in methods),
        [{"method": "dense"}],
    )
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting",
         "values": ("zeroshot mean", "perplexity",
                    *(f"zeroshot {task} acc" for task in PAPER_TASKS))})
    config.plot = ml_collections.ConfigDict(
        {"x": "setting", "y": "zeroshot mean", "series": "method", "logy": False,
         "title": "Zero-shot mean accuracy after one-shot pruning"})
    config.workdir = ""
    # A workdir holding a sweep of another base config is refused; True moves it aside first.
    config.overwrite = False
    config.runlocal = "runlocal" in parts
    config.runlocal_overrides = (("base.model", "tiny-llama"), ("base.eval.zeroshot.limit", 1))
    return config
