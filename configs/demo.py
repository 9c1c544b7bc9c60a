"""The `make demo` job: SmolLM2-135M's dense perplexity and a greedy completion.

Launch:
  python -m experiments.demo --config=configs/demo.py
  python -m experiments.demo --config=configs/demo.py:runlocal   # smoke run

The text is Python's built-in help topics (always installed), so the demo needs no data files.
"""

import ml_collections


def get_config(arg=None):
    """Returns the demo config; ``arg="runlocal"`` shrinks the evaluation."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"
    config.param_dtype = "float32"
    config.eval = ml_collections.ConfigDict()
    config.eval.source = "pydoc"
    config.eval.path = ""
    config.eval.split = "test"
    config.eval.window = 512
    config.eval.max_windows = ml_collections.FieldReference(16, field_type=int)
    config.eval.batch_size = 4
    config.prompt = "The capital of France is"
    config.max_new_tokens = 12
    config.runlocal = arg == "runlocal"
    if config.runlocal:
        config.eval.window = 128
        config.eval.max_windows = 2
        config.eval.batch_size = 2
        config.max_new_tokens = 6
    return config
