"""The `make demo` job: one-shot Wanda on SmolLM2-135M, perplexity before and after.

Launch:
  python -m experiments.demo --config=configs/demo.py
  python -m experiments.demo --config=configs/demo.py:runlocal   # smoke run

Calibration and evaluation use Python's built-in help topics (train and test splits, always
installed), so the demo needs no data files. For the papers' protocol see configs/wanda.py.
"""

import ml_collections

from configs.oneshot_base import add_pruning_fields


def get_config(arg=None):
    """Returns the demo config; ``arg="runlocal"`` shrinks calibration and evaluation."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"
    config.param_dtype = "float32"
    config.calibration = ml_collections.ConfigDict()
    config.calibration.source = "pydoc"
    config.calibration.path = ""
    config.calibration.split = "train"
    config.calibration.num_segments = 16
    config.calibration.length = 512
    config.calibration.seed = 0
    config.calibration.contiguous = True
    config.eval = ml_collections.ConfigDict()
    config.eval.source = "pydoc"
    config.eval.path = ""
    config.eval.split = "test"
    config.eval.window = 512
    config.eval.max_windows = ml_collections.FieldReference(16, field_type=int)
    config.eval.batch_size = 4
    add_pruning_fields(config, "wanda", "per_output")
    config.prompt = "The capital of France is"
    config.max_new_tokens = 12
    # --config.runlocal=True (or arg "runlocal") shrinks the job to a smoke run: the binary
    # applies these (field, value) pairs after the command line.
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (
        ("calibration.num_segments", 4), ("calibration.length", 64), ("eval.window", 128),
        ("eval.max_windows", 2), ("eval.batch_size", 2), ("max_new_tokens", 6),
    )
    return config
