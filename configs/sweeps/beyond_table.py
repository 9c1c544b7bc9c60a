r"""Beyond SparseGPT: the 2024-25 one-shot methods against SparseGPT and Wanda on SmolLM2, by
the one-shot protocol (64 x 512 calibration tokens, WikiText-2 in 128 windows of 512).

Each of 50% and 70% (each method's own comparison group: the whole tensor for SparseGPT and
ALPS, each output unit for the Wanda family) and 2:4: SparseGPT, Wanda, ALPS, DSnoT on Wanda
and on SparseGPT, Wanda++'s regional gradient score alone and with its block reconstruction,
Wanda and SparseGPT with block reconstruction; at 2:4 also RIA's score alone, Wanda, RIA and
SparseGPT on RIA's channel permutation, and MaskLLM's masks learned from SparseGPT's (100 steps
of 4 windows).

Launch (33 points, about 6 hours on 2 otherwise idle CPU cores: MaskLLM's point 78 minutes,
each reconstruction point 13 to 17, the others about 5; resumable):
  python -m experiments.sweep --config=configs/sweeps/beyond_table.py \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/beyond_table
With the zero-shot mean (the seven tasks' first 200 documents each, about 2 minutes a point on
top of its pruning), on the points that decide the comparison: dense, then SparseGPT, SparseGPT
with block reconstruction, ALPS and Wanda at 2:4 and 70% (9 points, about 70 minutes; its own
work directory, since the base config differs):
  python -m experiments.sweep --config=configs/sweeps/beyond_table.py:zeroshot ... \
      --config.workdir=runs/beyond_table_zeroshot
Smoke run (tiny random model, built-in text):
  python -m experiments.sweep --config=configs/sweeps/beyond_table.py:runlocal \
      --config.workdir=/tmp/beyond_table
"""

import ml_collections

from configs.oneshot_base import UNSTRUCTURED_GROUP, oneshot_config
from configs.sweeps.points import chain
from jaxprune.eval.tasks import PAPER_TASKS

# The fields of each row (its label in the table is the job's: "wanda_pp+recon" is Wanda++).
ROWS = (
    {"method": "sparsegpt"},
    {"method": "wanda"},
    {"method": "alps"},
    {"method": "wanda", "refine": "dsnot"},
    {"method": "sparsegpt", "refine": "dsnot"},
    {"method": "wanda_pp"},
    {"method": "wanda_pp", "reconstruction": "adam"},
    {"method": "wanda", "reconstruction": "adam"},
    {"method": "sparsegpt", "reconstruction": "adam"},
)
# Rows only N:M patterns have: RIA's score alone and RIA's permutation under three scores (as
# RIA's paper compares them at 2:4), and MaskLLM learning from SparseGPT's masks.
N_OF_M_ROWS = ({"method": "ria"},
               *({"method": m, "permute": True} for m in ("wanda", "ria", "sparsegpt")),
               {"method": "sparsegpt", "learn_masks": "maskllm"})
ZEROSHOT_LIMIT = 200
# The rows scored zero-shot, at 2:4 and 70%: the baseline, the best overall and the best
# without training of the perplexity table, and Wanda, the baseline of its family.
ZEROSHOT_ROWS = ({"method": "sparsegpt"},
                 {"method": "sparsegpt", "reconstruction": "adam"},
                 {"method": "alps"},
                 {"method": "wanda"})


def _unstructured(rows, sparsity: float) -> list[dict]:
    """The rows at ``sparsity``, each in its method's comparison group."""
    return [dict(fields, pattern=UNSTRUCTURED_GROUP[fields["method"]], sparsity=sparsity)
            for fields in rows]


def _two_of_four(rows) -> list[dict]:
    return [dict(fields, pattern="2:4", sparsity=0.5) for fields in rows]


def beyond_points() -> list[dict]:
    """Dense, then every row at 50%, 70% and 2:4 (the N:M rows at 2:4 only)."""
    return chain([{"method": "dense"}], _unstructured(ROWS, 0.5), _unstructured(ROWS, 0.7),
                 _two_of_four(ROWS + N_OF_M_ROWS))


def zeroshot_points() -> list[dict]:
    """Dense, then ``ZEROSHOT_ROWS`` at 2:4 and at 70%."""
    return chain([{"method": "dense"}], _two_of_four(ZEROSHOT_ROWS),
                 _unstructured(ZEROSHOT_ROWS, 0.7))


def get_config(arg=None):
    """The sweep on SmolLM2; ``arg="zeroshot"``: the zero-shot mean on ``zeroshot_points()``;
    ``arg="runlocal"``: the tiny random model with built-in text."""
    if arg not in (None, "runlocal", "zeroshot"):
        raise ValueError(f"configs/sweeps/beyond_table.py takes 'runlocal' or 'zeroshot', "
                         f"got {arg!r}")
    config = ml_collections.ConfigDict()
    config.name = "Beyond SparseGPT: one-shot methods of 2024-25 at 50%, 70% and 2:4"
    config.description = (
        "Perplexity after one-shot pruning of all linear layers of every block, calibrated on "
        "64 x 512 tokens; the 50% and 70% columns use each method's comparison group.")
    config.experiment = "prune"
    config.base = oneshot_config("wanda", "per_output")
    config.points = beyond_points()
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting",
         "values": ("perplexity", "prune_seconds", "peak_memory_mb")})
    config.plot = ml_collections.ConfigDict(
        {"x": "setting", "y": "perplexity", "series": "method", "logy": True,
         "lines": False, "title": "Beyond SparseGPT on SmolLM2-135M: 50%, 70% and 2:4"})
    if arg == "zeroshot":
        config.base.eval.zeroshot.tasks = ",".join(PAPER_TASKS)
        config.base.eval.zeroshot.limit = ZEROSHOT_LIMIT
        config.points = zeroshot_points()
        config.table["values"] += ("zeroshot mean",)
        config.plot.update({"y": "zeroshot mean", "logy": False,
                            "title": "Beyond SparseGPT on SmolLM2-135M: zero-shot mean"})
    config.workdir = ""
    # A workdir holding a sweep of another base config is refused; True moves it aside first.
    config.overwrite = False
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("base.model", "tiny-llama"),)
    return config
