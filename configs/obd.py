"""Optimal Brain Damage with the layer-wise Hessian diagonal, per tensor.

--config.method=obd_fisher uses the empirical Fisher diagonal of the LM loss instead.

Launch (the protocol of docs/results.md):
  python -m experiments.prune --config=configs/obd.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw [--config.pattern=2:4]
Smoke run:
  python -m experiments.prune --config=configs/obd.py:runlocal
"""

from configs.oneshot_base import oneshot_config


def get_config(arg=None):
    """One-shot obd at 50% (unstructured); ``arg="runlocal"`` shrinks it to a smoke run."""
    return oneshot_config("obd", "unstructured", arg)
