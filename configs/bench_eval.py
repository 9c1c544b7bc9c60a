r"""Benchmark: evaluation throughput of jaxprune against transformers on the same CPU.

Launch (the table of docs/results.md):
  python -m experiments.bench_eval --config=configs/bench_eval.py \
      --config.eval_path=../shared/data/wikitext-2-raw --config.out=runs/bench_eval.json
Smoke run (2 windows of 64 tokens, one timed run each):
  python -m experiments.bench_eval --config=configs/bench_eval.py:runlocal
"""

import ml_collections


def get_config(arg=None):
    """The benchmark; ``arg="runlocal"`` shrinks it to a smoke run."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"  # a packaged GGUF model: transformers reads the same file
    config.eval_path = ""  # WikiText-2 raw directory; Python's help topics when empty
    config.windows = 16  # windows timed
    config.window = 512  # tokens per window
    config.batch_size = 8  # windows per forward pass
    config.repeats = 3  # timed runs per engine; medians are reported
    config.out = ""  # JSON output path, written atomically
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("windows", 2), ("window", 64), ("batch_size", 2),
                                 ("repeats", 1))
    return config
