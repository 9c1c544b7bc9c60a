r"""Layer-wise diagnostic: each method's pruned kernels against the dense layer's outputs on the
calibration tokens (mean squared output error, and the squared mean shift DSnoT targets), for
the linear layers of a few blocks, every method pruning the same dense layer.

Launch (SmolLM2, 16 x 512 calibration tokens, blocks 0, 10 and 20 at 2:4; about 2 minutes on
2 CPU cores):
  python -m experiments.layer_error --config=configs/layer_error.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.out=runs/layer_error.json
Smoke run (tiny random model, built-in text):
  python -m experiments.layer_error --config=configs/layer_error.py:runlocal
"""

import ml_collections

from configs.oneshot_base import oneshot_config


def get_config(arg=None):
    """The diagnostic; ``arg="runlocal"`` shrinks it to the tiny model."""
    if arg not in (None, "runlocal"):
        raise ValueError(f"configs/layer_error.py takes 'runlocal', got {arg!r}")
    config = oneshot_config("wanda", "2:4", arg)
    config.sparsity = 0.5
    config.calibration.num_segments = 16
    config.blocks = (0, 10, 20)
    # label -> the one-shot fields that differ from the base (method, refine, ...).
    config.variants = ml_collections.ConfigDict({
        "wanda": {"method": "wanda"},
        "wanda+dsnot": {"method": "wanda", "refine": "dsnot"},
        "sparsegpt": {"method": "sparsegpt"},
        "sparsegpt+dsnot": {"method": "sparsegpt", "refine": "dsnot"},
    })
    config.out = ""  # JSON of the rows; empty: printed only
    config.runlocal_overrides = (*config.runlocal_overrides, ("model", "tiny-llama"),
                                 ("blocks", (0, 1)))
    return config
