"""Magnitude pruning (per tensor), no calibration data needed.

Launch (the protocol of docs/results.md):
  python -m experiments.prune --config=configs/magnitude.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw [--config.pattern=2:4]
Smoke run:
  python -m experiments.prune --config=configs/magnitude.py:runlocal
"""

from configs.oneshot_base import oneshot_config


def get_config(arg=None):
    """One-shot magnitude at 50% (unstructured); ``arg="runlocal"`` shrinks it to a smoke run."""
    return oneshot_config("magnitude", "unstructured", arg)
