r"""Parity of jaxprune's zero-shot tasks with lm-evaluation-harness's own task code
(experiments/harness_parity.py).

Launch (every document of every task; the figures of docs/zeroshot.md):
  python -m experiments.harness_parity --config=configs/harness_parity.py \
      --config.out=runs/harness_parity.json
Smoke run (two documents of RTE and WinoGrande, the tiny model's byte tokenizer):
  python -m experiments.harness_parity --config=configs/harness_parity.py:runlocal
"""

import ml_collections

from jaxprune.eval.tasks import TASKS


def get_config(arg=None):
    """Every task, every document; ``arg="runlocal"`` shrinks it to a smoke run."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"  # its tokenizer always; its weights when not random_model
    config.random_model = True  # a small random Llama over the model's vocabulary
    config.seed = 0  # of the random model
    config.tasks = ",".join(TASKS)  # comma-separated names of jaxprune.eval.TASKS
    config.limit = ml_collections.FieldReference(None, field_type=int)  # None: every document
    config.batch_size = 16  # documents per forward pass
    config.out = ""  # JSON output path, written atomically
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("model", "tiny-llama"), ("tasks", "rte,winogrande"),
                                 ("limit", 2))
    return config
