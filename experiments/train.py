r"""Train or fine-tune a model while it is pruned on a schedule; orbax checkpoints and resume.

  python -m experiments.train --config=configs/gradual.py:rigl \
      --config.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/rigl

The train state (parameters, optimizer state with the masks, step) and the loss curve so far
are saved every ``config.train.checkpoint_every`` steps under ``WORKDIR/checkpoints`` (orbax
writes into a temporary directory and renames it, so a kill leaves the previous checkpoint
intact). Run the same command again after an interruption and training resumes from the latest
checkpoint; batches depend only on the seed and the step, so parameters, curve and results are
bit for bit those of an uninterrupted run on CPU. The work directory records the config's
fingerprint (``run.json``): another config there is refused before any work
(``--config.overwrite=True`` moves the old run aside), and a second process on the same
directory stops at once. At the end: results.json, results.md and a loss curve (loss.png).
"""

from __future__ import annotations

import os

from absl import app, logging
from ml_collections import config_flags

from experiments import common, train_job
from jaxprune import training

_CONFIG = config_flags.DEFINE_config_file("config", "configs/gradual.py", "Training config.")


def write_results(config, metrics: dict, curve: list) -> None:
    """results.json, results.md and loss.png in ``config.workdir``."""
    table = common.markdown_table([metrics], list(metrics))
    common.write_json_atomic(os.path.join(config.workdir, "results.json"), {
        "config": config.to_dict(), "metrics": metrics, "curve": curve,
        "git": common.git_revision(), "packages": common.package_versions()})
    common.write_text_atomic(os.path.join(config.workdir, "results.md"), table + "\n")
    try:
        png = train_job.loss_curve_png(curve, f"{config.model}, rule {config.rule}")
        common.write_bytes_atomic(os.path.join(config.workdir, "loss.png"), png)
    except ImportError:
        logging.warning("matplotlib is not installed (extra 'plots'): no loss.png")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with common.job(_CONFIG.value, train_job) as (config, resources, _):
        trainer = train_job.make_trainer(config, resources)
        curve = train_job.run_with_checkpoints(trainer, config.workdir)
        metrics = {"rule": config.rule, "steps": config.train.steps,
                   "final_loss": curve[-1][1],
                   **train_job.evaluate(trainer, config, resources, config.workdir),
                   "params_sha256": training.params_fingerprint(trainer.state["params"])}
        print(common.markdown_table([metrics], list(metrics)))
        if config.workdir:
            write_results(config, metrics, curve)
            print(f"wrote {config.workdir}")


if __name__ == "__main__":
    common.run_main(main)
