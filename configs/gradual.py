r"""Training a small byte-level LM from scratch while it is pruned: dense, gradual magnitude,
straight-through, SNIP, SET or RigL to 80% sparsity.

Launch (one rule; the argument picks it: dense, gradual, ste, snip, set, rigl):
  python -m experiments.train --config=configs/gradual.py:rigl \
      --config.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/train_rigl
The study of docs/results.md (all rules, one table and plot):
  python -m experiments.sweep --config=configs/sweeps/training_study.py \
      --config.base.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/training_study
Smoke run:
  python -m experiments.train --config=configs/gradual.py:rigl,runlocal
"""

import ml_collections

from configs.zeroshot import zeroshot_settings
from jaxprune.training import RULES


def train_section(**changes) -> ml_collections.ConfigDict:
    """A ``train`` section: the training text and ``TrainSettings``' fields (``changes``
    replace the defaults of the training configs)."""
    section = ml_collections.ConfigDict(dict(
        source="file",
        path="",  # e.g. ../shared/data/calibration/enwiki-excerpt.txt
        split="train", steps=500, batch_size=16, seq_len=128, learning_rate=3e-3,
        warmup_steps=50, final_lr_fraction=0.1, weight_decay=0.0, clip_norm=1.0,
        checkpoint_every=100, log_every=25))
    section.update(changes)
    return section


def training_config(model: str, rule: str) -> ml_collections.ConfigDict:
    """Fields shared by the training configs (this file and configs/gradual_smollm2.py)."""
    config = ml_collections.ConfigDict()
    config.model = model
    config.param_dtype = "float32"
    config.seed = 0
    config.rule = rule

    # The sparsity rule (jaxprune.training): target, cubic schedule from begin to end with
    # updates every update_every steps (gradual, ste); drop-and-grow period and fraction
    # (set, rigl: updates every update_every steps until end).
    config.sparsity = ml_collections.ConfigDict()
    config.sparsity.final = 0.8
    config.sparsity.begin = 100
    config.sparsity.end = 350
    config.sparsity.update_every = 25
    config.sparsity.drop_fraction = 0.3
    config.sparsity.allocation = "uniform"
    config.sparsity.pattern = "unstructured"

    config.train = train_section()

    config.eval = ml_collections.ConfigDict()
    config.eval.source = "wikitext2"
    config.eval.path = ""  # e.g. ../shared/data/wikitext-2-raw
    config.eval.split = "test"
    config.eval.window = 128
    config.eval.max_windows = ml_collections.FieldReference(128, field_type=int)
    config.eval.batch_size = 8
    # Zero-shot accuracy after perplexity, e.g. --config.eval.zeroshot.tasks=boolq,rte (empty:
    # none; configs/zeroshot.py has the fields).
    config.eval.zeroshot = zeroshot_settings()

    config.workdir = ""  # checkpoints, results.json, results.md and loss.png go here
    # A workdir holding another config's run is refused; True moves that run aside first.
    config.overwrite = False
    config.runlocal = False
    config.runlocal_overrides = (
        ("model", "tiny-llama"), ("train.source", "pydoc"), ("train.steps", 40),
        ("train.batch_size", 4), ("train.seq_len", 64), ("train.warmup_steps", 5),
        ("train.checkpoint_every", 20), ("train.log_every", 10), ("sparsity.begin", 10),
        ("sparsity.end", 30), ("sparsity.update_every", 10), ("eval.source", "pydoc"),
        ("eval.window", 64), ("eval.max_windows", 4), ("eval.batch_size", 4),
    )
    return config


def get_config(arg=None):
    """``arg``: a rule name and/or "runlocal", comma-separated (default: gradual)."""
    parts = [p for p in (arg or "").split(",") if p]
    rules = [p for p in parts if p != "runlocal"]
    unknown = [p for p in rules if p not in RULES]
    if unknown or len(rules) > 1:
        raise ValueError(f"configs/gradual.py takes one rule of {list(RULES)} and/or 'runlocal', "
                         f"got {arg!r}")
    config = training_config("mini-llama", rules[0] if rules else "gradual")
    config.runlocal = "runlocal" in parts
    return config
