r"""Benchmark: zero-shot scoring by jaxprune against lm-evaluation-harness's Hugging Face
backend on the same documents (experiments/bench_zeroshot.py).

Launch (the table of docs/zeroshot.md: the seven tasks, first 100 documents of each):
  python -m experiments.bench_zeroshot --config=configs/bench_zeroshot.py \
      --config.out=runs/bench_zeroshot.json
Smoke run (two RTE documents):
  python -m experiments.bench_zeroshot --config=configs/bench_zeroshot.py:runlocal
"""

import ml_collections

from jaxprune.eval.tasks import PAPER_TASKS


def get_config(arg=None):
    """The benchmark; ``arg="runlocal"`` shrinks it to a smoke run."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"  # a packaged GGUF model: transformers reads the same file
    config.tasks = ",".join(PAPER_TASKS)  # comma-separated names of jaxprune.eval.TASKS
    config.limit = 100  # the first documents of each task
    config.batch_size = 8  # jaxprune: documents per forward pass
    config.hf_batch_size = 8  # the harness's HFLM: requests per forward pass
    config.out = ""  # JSON output path, written atomically
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("tasks", "rte"), ("limit", 2))
    return config
