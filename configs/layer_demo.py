"""Demo of the pruning core on one synthetic layer with outlier input features.

Launch:
  python -m experiments.layer_demo --config=configs/layer_demo.py
  python -m experiments.layer_demo --config=configs/layer_demo.py:runlocal  # smoke run

Prunes a single linear layer whose inputs have a few large-magnitude features (as LLM
activations do) and reports how much of the layer's output each criterion and pattern keeps:
the pruning core alone, no model.
"""

import ml_collections


def get_config(arg=None):
    """Returns the demo config; ``arg="runlocal"`` shrinks it to a smoke run."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.in_features = 1024
    config.out_features = 512
    config.num_samples = 4096
    # Input features with a scale this many times the others, like LLM activation outliers.
    config.num_outlier_features = 16
    config.outlier_scale = 20.0
    config.sparsity = 0.5
    config.patterns = ("unstructured", "per_output", "global", "2:4", "4:8")
    config.criteria = ("random", "magnitude", "input_weighted")
    config.workdir = ""  # When set, results.json is written there.
    # A workdir holding another config's run is refused; True moves that run aside first.
    config.overwrite = False
    # --config.runlocal=True (or arg "runlocal") shrinks the job to a smoke run: the binary
    # applies these (field, value) pairs after the command line.
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (
        ("in_features", 64), ("out_features", 32), ("num_samples", 256),
        ("num_outlier_features", 4),
    )
    return config
