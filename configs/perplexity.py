"""Dense perplexity of a model by the papers' protocol.

Launch (the figure in docs/results.md):
  python -m experiments.perplexity --config=configs/perplexity.py \
      --config.eval.path=../shared/data/wikitext-2-raw
Smoke run (tests):
  python -m experiments.perplexity --config=configs/perplexity.py:runlocal
"""

import ml_collections


def get_config(arg=None):
    """WikiText-2 raw test, 512-token windows, the first 128 windows; ``runlocal`` shrinks."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"  # a packaged name, a .gguf file or a HF directory
    config.param_dtype = "float32"
    config.eval = ml_collections.ConfigDict()
    config.eval.source = "wikitext2"
    config.eval.path = ""  # directory holding wiki.test.raw
    config.eval.split = "test"
    config.eval.window = 512
    config.eval.max_windows = ml_collections.FieldReference(128, field_type=int)
    config.eval.batch_size = 8
    config.workdir = ""  # when set, perplexity.json is written there
    # A workdir holding another config's run is refused; True moves that run aside first.
    config.overwrite = False
    # --config.runlocal=True (or arg "runlocal") shrinks the job to a smoke run: the binary
    # applies these (field, value) pairs after the command line.
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (
        ("eval.source", "pydoc"), ("eval.window", 128), ("eval.max_windows", 2),
        ("eval.batch_size", 2),
    )
    return config
