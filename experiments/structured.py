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

import os

from absl import app, logging
from ml_collections import config_flags

from experiments import common, structured_job, train_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/structured.py", "Config.")


def write_results(config, metrics: dict, outcome: dict, tokenizer) -> None:
    """results.json, results.md, loss.png and (``config.save_hf``) the student's export."""
    table = common.markdown_table([metrics], list(metrics))
    common.write_json_atomic(os.path.join(config.workdir, "results.json"), {
        "config": config.to_dict(), "metrics": metrics, "timings": outcome["timings"],
        "details": outcome["details"], "curve": outcome["curve"],
        "git": common.git_revision(), "packages": common.package_versions()})
    common.write_text_atomic(os.path.join(config.workdir, "results.md"), table + "\n")
    if outcome["curve"]:
        try:
            png = train_job.loss_curve_png(outcome["curve"], f"distillation: {metrics['method']}")
            common.write_bytes_atomic(os.path.join(config.workdir, "loss.png"), png)
        except ImportError:
            logging.warning("matplotlib is not installed (extra 'plots'): no loss.png")
    student, export = outcome["student"], os.path.join(config.workdir, "hf")
    if config.save_hf and not student.config.is_uniform:
        logging.warning("the student's blocks differ in width: no Hugging Face export")
    elif config.save_hf and os.path.isdir(export):
        # The directory was claimed for this config, and exports are renamed into place
        # complete: what is there is this student.
        logging.info("%s exists already (an earlier run of this config)", export)
    elif config.save_hf:
        from jaxprune import models

        models.save_hf_dir(student, export, tokenizer=tokenizer)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with common.job(_CONFIG.value, structured_job) as (config, resources, _):
        teacher, tokenizer = resources.model(config)
        dense = common.evaluate(teacher, resources.evaluation_tokens(config), config.eval,
                                tokenizer)
        outcome = structured_job.run_point(config, resources, workdir=config.workdir,
                                           keep_dir=config.workdir)
        metrics = {**outcome["metrics"], "dense_perplexity": dense.perplexity,
                   "dense_tokens_per_second": dense.tokens_per_second}
        print(common.markdown_table([metrics], list(metrics)))
        if config.workdir:
            write_results(config, metrics, outcome, resources.model(config)[1])
            print(f"wrote {config.workdir}")


if __name__ == "__main__":
    common.run_main(main)
