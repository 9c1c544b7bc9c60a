r"""The production pipeline in one command: prune -> recover -> quantize -> export -> evaluate.

  python -m experiments.compress --config=configs/compress.py:sparsegpt_2of4_lora_int4 \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/compress/lora_int4

A one-shot row runs the prune job (``prune_run``: one-shot pruning, ``config.recover``,
``config.quantize``, the exports ``config.save_*``, perplexity and zero-shot); a structured
row runs the structured job (``structured_run``: the cut, its distillation, then
``config.quantize``). Both write results.json and results.md in the workdir and resume or
refuse as their binaries do.
"""

from __future__ import annotations

from absl import app
from ml_collections import config_flags

from experiments import common, prune_run, structured_run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Compression pipeline config.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. "
                             "--config=configs/compress.py:sparsegpt_2of4_int4")
    # A structured cut's config has a cut section; a one-shot pruning's has none.
    if "cut" in _CONFIG.value:
        structured_run.run_structured(_CONFIG.value)
    else:
        prune_run.run_prune(_CONFIG.value)


if __name__ == "__main__":
    common.run_main(main)
