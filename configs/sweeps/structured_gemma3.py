r"""Structured pruning of Gemma 3 270M: two blocks fewer against the MLP channels of about as
many parameters, each before and after the short distillation of the SmolLM2 ablation.

Gemma 3 270M has 18 blocks of 5.57M parameters; 2 blocks (11.1M, 11% of the 100M outside the
embedding) are the cut, and 2048 -> 1726 MLP channels in every block remove as many
(18 x 3 x 640 x 322 = 11.1M). Depth by block influence (ShortGPT), width by activation
importance (Minitron), the best criteria of docs/results.md's SmolLM2 ablation.

Launch (4 points, about 50 minutes on 2 CPU cores):
  python -m experiments.sweep --config=configs/sweeps/structured_gemma3.py \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/structured_gemma3
Smoke run (tiny random model):
  python -m experiments.sweep --config=configs/sweeps/structured_gemma3.py:runlocal \
      --config.workdir=/tmp/structured_gemma3
"""

import ml_collections

from configs import structured
from configs.sweeps.points import product

# (name, cut fields); runlocal: the tiny model's 2 blocks and 128 channels.
CUTS = {"depth2": dict(kind="depth", criterion="block_influence", blocks=2),
        "mlp1726": dict(kind="width", criterion="activation", mlp_channels=1726)}
RUNLOCAL = {"depth2": dict(blocks=1), "mlp1726": dict(mlp_channels=96)}


def get_config(arg=None):
    """The sweep; ``arg="runlocal"`` runs it on the tiny random model."""
    runlocal = arg == "runlocal"
    config = ml_collections.ConfigDict()
    config.name = "Structured pruning of Gemma 3 270M: depth vs width"
    config.description = (
        "Perplexity (WikiText-2 raw test, 128 x 512, BOS first) after cutting 2 of 18 blocks "
        "or the MLP channels of as many parameters (2048 -> 1726), before and after 32 steps "
        "of logit distillation from the dense model (4 x 256 tokens per step).")
    config.experiment = "structured"
    config.base = structured.get_config("dense")
    config.base.model = "gemma3-270m"
    config.base.train.update(structured.SHORT_DISTILL)
    config.points = [
        {**{f"cut.{k}": v for k, v in {**fields, **(RUNLOCAL[name] if runlocal else {})}.items()},
         **distill}
        for name, fields in CUTS.items() for distill in product(distill__enabled=[False, True])]
    config.table = ml_collections.ConfigDict(
        {"rows": "method", "columns": "setting",
         "values": ("perplexity", "params_non_embedding", "tokens_per_second")})
    # Both cuts remove 11.1M parameters: the cut, not its size, goes on the x axis.
    config.plot = ml_collections.ConfigDict(
        {"x": "method", "y": "perplexity", "series": "setting", "logy": False,
         "lines": False, "title": "Gemma 3 270M: 11.1M parameters cut (WikiText-2)"})
    config.workdir = ""
    config.overwrite = False
    config.runlocal = runlocal
    config.runlocal_overrides = ()
    return config
