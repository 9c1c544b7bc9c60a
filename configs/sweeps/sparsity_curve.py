r"""Perplexity against unstructured sparsity, 10% to 90%, for magnitude, Wanda and SparseGPT.

Launch (28 points, about 45 minutes on 2 CPU cores):
  python -m experiments.sweep --config=configs/sweeps/sparsity_curve.py \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/sparsity_curve
Smoke run (tiny random model, built-in text):
  python -m experiments.sweep --config=configs/sweeps/sparsity_curve.py:runlocal \
      --config.workdir=/tmp/sparsity_curve

The curve evaluates the first 32 WikiText-2 windows (16,384 tokens) instead of the table's 128,
which keeps 28 points within the hour on 2 cores; pass --config.base.eval.max_windows=128 for
the full protocol. OBD is left out: with the layer-wise Hessian it ranks like Wanda, per tensor.
"""

import ml_collections

from configs.oneshot_base import UNSTRUCTURED_GROUP, oneshot_config
from configs.sweeps.points import chain

METHODS = ("magnitude", "wanda", "sparsegpt")
SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def get_config(arg=None):
    """The sweep; ``arg="runlocal"`` runs it on the tiny random model with built-in text."""
    config = ml_collections.ConfigDict()
    config.name = "One-shot pruning: perplexity against unstructured sparsity"
    config.description = (
        "Perplexity (first 32 WikiText-2 windows of 512 tokens) after one-shot unstructured "
        "pruning of all linear layers of every block, each method in its comparison group.")
    config.experiment = "prune"
    config.base = oneshot_config("wanda", "per_output")
    config.base.eval.max_windows = 32
    config.points = chain(
        [{"method": "dense"}],
        *([{"method": m, "pattern": UNSTRUCTURED_GROUP[m], "sparsity": s} for s in SPARSITIES]
          for m in METHODS),
    )
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting", "values": ("perplexity", "prune_seconds")})
    config.plot = ml_collections.ConfigDict(
        {"x": "sparsity", "y": "perplexity", "series": "method", "logy": True,
         "title": "SmolLM2-135M, one-shot unstructured pruning"})
    config.workdir = ""
    # A workdir holding a sweep of another base config is refused; True moves it aside first.
    config.overwrite = False
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("base.model", "tiny-llama"),)
    return config
