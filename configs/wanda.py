"""Wanda: |W| times input norms, compared per output unit.

Launch (the protocol of docs/results.md):
  python -m experiments.prune --config=configs/wanda.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw [--config.pattern=2:4]
Smoke run:
  python -m experiments.prune --config=configs/wanda.py:runlocal
"""

from configs.oneshot_base import oneshot_config


def get_config(arg=None):
    """One-shot wanda at 50% (per_output); ``arg="runlocal"`` shrinks it to a smoke run."""
    return oneshot_config("wanda", "per_output", arg)
