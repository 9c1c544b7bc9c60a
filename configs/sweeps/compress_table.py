r"""The one-shot rows of the compression table (docs/results.md): dense; int8 and int4 by
round-to-nearest and GPTQ; SparseGPT 2:4; 2:4 + int4 in SparseGPT's joint sweep, also with
the embedding table at int8; 2:4 with masked LoRA recovery, in float, then GPTQ int4, also
with the embedding at int8 (configs/compress.py's one-shot rows).

Launch (11 points; resumable):
  python -m experiments.sweep --config=configs/sweeps/compress_table.py \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/compress_table
With the zero-shot mean (the seven tasks' first 200 documents each):
  python -m experiments.sweep --config=configs/sweeps/compress_table.py:zeroshot ...
The structured rows (a cut, its distillation, GPTQ int4) run one by one:
  python -m experiments.compress --config=configs/compress.py:depth4_int4 ...  (and mlp_int4)
Smoke run (tiny random model, built-in text):
  python -m experiments.sweep --config=configs/sweeps/compress_table.py:runlocal \
      --config.workdir=/tmp/compress_table
"""

import ml_collections

from configs.compress import ONESHOT_ROWS
from configs.oneshot_base import oneshot_config
from jaxprune.eval.tasks import PAPER_TASKS

ZEROSHOT_LIMIT = 200


def compress_points() -> list[dict]:
    """One point per one-shot row: its method, pattern and fields."""
    return [dict(method=method, pattern=pattern, sparsity=0.0 if method == "dense" else 0.5,
                 **fields) for method, pattern, fields in ONESHOT_ROWS.values()]


def get_config(arg=None):
    """The sweep on SmolLM2; ``arg="zeroshot"`` adds the zero-shot mean; ``arg="runlocal"``:
    the tiny random model with built-in text."""
    if arg not in (None, "runlocal", "zeroshot"):
        raise ValueError(f"configs/sweeps/compress_table.py takes 'runlocal' or 'zeroshot', "
                         f"got {arg!r}")
    config = ml_collections.ConfigDict()
    config.name = "Compression of SmolLM2-135M: quantization, 2:4, recovery"
    config.description = (
        "Perplexity and packed size after pruning, recovery and quantization; calibration "
        "64 x 512 tokens, LoRA recovery 64 steps of 4 x 256 tokens from the dense model.")
    config.experiment = "prune"
    config.base = oneshot_config("sparsegpt", "2:4")
    if arg == "zeroshot":
        config.base.eval.zeroshot.tasks = ",".join(PAPER_TASKS)
        config.base.eval.zeroshot.limit = ZEROSHOT_LIMIT
    config.points = compress_points()
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting",
         "values": ("perplexity", "weights_mb", "prune_seconds")})
    config.plot = ml_collections.ConfigDict(
        {"x": "weights_mb", "y": "perplexity", "series": "method", "logy": True,
         "title": "SmolLM2-135M: perplexity against packed size"})
    config.workdir = ""
    # A workdir holding a sweep of another base config is refused; True moves it aside first.
    config.overwrite = False
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("base.model", "tiny-llama"),)
    return config
