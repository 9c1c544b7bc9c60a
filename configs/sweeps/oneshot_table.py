r"""The one-shot table of docs/results.md: dense, then each method at 50%, 4:8 and 2:4.

Launch (13 points, about 40 minutes on 2 CPU cores):
  python -m experiments.sweep --config=configs/sweeps/oneshot_table.py \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/oneshot_table
Gemma 3 270M (10 points: dense, then magnitude, Wanda and SparseGPT; about 90 minutes):
  python -m experiments.sweep --config=configs/sweeps/oneshot_table.py:gemma3 \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/oneshot_table_gemma3
Smoke run (tiny random model, built-in text):
  python -m experiments.sweep --config=configs/sweeps/oneshot_table.py:runlocal \
      --config.workdir=/tmp/oneshot_table
"""

import ml_collections

from configs.oneshot_base import UNSTRUCTURED_GROUP, oneshot_config
from configs.sweeps.points import chain

METHODS = ("magnitude", "obd", "wanda", "sparsegpt")
# Gemma 3's table leaves out OBD, which ranks weights as Wanda does (docs/results.md).
GEMMA3_METHODS = ("magnitude", "wanda", "sparsegpt")


def get_config(arg=None):
    """The sweep on SmolLM2; ``arg="gemma3"``: on Gemma 3 270M; ``arg="runlocal"``: on the
    tiny random model with built-in text."""
    if arg not in (None, "runlocal", "gemma3"):
        raise ValueError(f"configs/sweeps/oneshot_table.py takes 'runlocal' or 'gemma3', "
                         f"got {arg!r}")
    gemma3 = arg == "gemma3"
    config = ml_collections.ConfigDict()
    config.name = ("One-shot pruning of Gemma 3 270M: 50% unstructured, 4:8 and 2:4" if gemma3
                   else "One-shot pruning: 50% unstructured, 4:8 and 2:4")
    config.description = (
        "Perplexity after one-shot pruning of all linear layers of every block, calibrated on "
        "64 x 512 tokens; the 50% column uses each method's comparison group.")
    config.experiment = "prune"
    config.base = oneshot_config("wanda", "per_output")
    if gemma3:
        config.base.model = "gemma3-270m"
    config.points = chain(
        [{"method": "dense"}],
        *([{"method": m, "pattern": UNSTRUCTURED_GROUP[m]},
           {"method": m, "pattern": "4:8"},
           {"method": m, "pattern": "2:4"}] for m in (GEMMA3_METHODS if gemma3 else METHODS)),
    )
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting",
         "values": ("perplexity", "prune_seconds", "peak_memory_mb")})
    config.plot = ml_collections.ConfigDict(
        {"x": "setting", "y": "perplexity", "series": "method", "logy": True,
         "title": ("Gemma 3 270M, one-shot: 50%, 4:8 and 2:4" if gemma3
                   else "One-shot pruning: 50%, 4:8 and 2:4")})
    config.workdir = ""
    # A workdir holding a sweep of another base config is refused; True moves it aside first.
    config.overwrite = False
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("base.model", "tiny-llama"),)
    return config
