r"""The gradual-pruning study of docs/results.md: a byte-level LM (mini-llama, 0.82M
parameters) trained from scratch, dense and at 80% with gradual magnitude, straight-through
gradual magnitude, SNIP, SET and RigL.

Launch (6 points, about 20 minutes on 2 CPU cores):
  python -m experiments.sweep --config=configs/sweeps/training_study.py \
      --config.base.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/training_study
Smoke run:
  python -m experiments.sweep --config=configs/sweeps/training_study.py:runlocal \
      --config.workdir=/tmp/training_study
"""

import ml_collections

from configs.gradual import RULES, training_config


def get_config(arg=None):
    """The sweep; ``arg="runlocal"`` shrinks every point to a smoke run."""
    config = ml_collections.ConfigDict()
    config.name = "Training with pruning: a byte-level LM from scratch, dense vs 80% sparse"
    config.description = (
        "mini-llama trained 500 steps of 16 x 128 bytes of the Wikipedia text (sparsity "
        "rising from step 100 to 350 for gradual and ste); perplexity per byte on the first "
        "128 windows of 128 bytes of WikiText-2 raw test.")
    config.experiment = "train"
    config.base = training_config("mini-llama", "gradual")
    config.points = [{"rule": rule} for rule in RULES]
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting",
         "values": ("final_loss", "perplexity", "sparsity", "train_seconds")})
    config.plot = ml_collections.ConfigDict(
        {"x": "method", "y": "perplexity", "series": "setting", "logy": False,
         "lines": False, "title": "mini-llama from scratch: perplexity per byte"})
    config.workdir = ""
    # A workdir holding a sweep of another base config is refused; True moves it aside first.
    config.overwrite = False
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = ()
    return config
