r"""One-shot pruning of a real LLM with calibration data, then perplexity.

  python -m experiments.prune --config=configs/wanda.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/wanda

Prints a table (method, pattern, achieved sparsity, perplexity, pruning wall time, peak memory)
and, with a workdir, writes it as results.json and results.md; optionally saves the pruned model
as an orbax checkpoint and a Hugging Face directory. The work directory records the config's
fingerprint: the same command again prints the finished run's table (or, after an interruption,
runs again from the start), another config there is refused before the model is loaded
(``--config.overwrite=True`` moves the old run aside).
"""

from __future__ import annotations

from absl import app
from ml_collections import config_flags

from experiments import common, prune_run

_CONFIG = config_flags.DEFINE_config_file("config", None, "One-shot pruning configuration.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config=configs/wanda.py")
    prune_run.run_prune(_CONFIG.value)


if __name__ == "__main__":
    common.run_main(main)
