r"""Structured pruning: cut blocks or widths by importance, evaluate, distil, evaluate again.

  python -m experiments.structured --config=configs/structured.py:heads6,distill \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/heads6

Prints one row (method, parameters with and without embeddings, perplexity before and after
distillation, evaluation tokens/s) and, with a workdir, writes results.json, results.md, the
distillation loss curve and, when the widths are uniform, the student as a Hugging Face
directory (``config.save_hf``). Distillation checkpoints (with the loss curve so far) go to
WORKDIR/checkpoints; rerunning the command after an interruption rebuilds the same student and
resumes. The work directory records the config's fingerprint: another cut or setting there is
refused before the model is loaded (``--config.overwrite=True`` moves the old run aside).
"""

from __future__ import annotations

from absl import app
from ml_collections import config_flags

from experiments import common, structured_run

_CONFIG = config_flags.DEFINE_config_file("config", "configs/structured.py", "Config.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    structured_run.run_structured(_CONFIG.value)


if __name__ == "__main__":
    common.run_main(main)
