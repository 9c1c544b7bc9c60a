r"""Train or fine-tune a model while it is pruned on a schedule; orbax checkpoints and resume.

  python -m experiments.train --config=configs/gradual.py:rigl \
      --config.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/rigl

The train state (parameters, optimizer state with the masks, step) is saved every
``config.train.checkpoint_every`` steps under ``WORKDIR/checkpoints`` (orbax writes into a
temporary directory and renames it, so a kill leaves the previous checkpoint intact). Run the
same command again after an interruption and training resumes from the latest checkpoint;
batches depend only on the seed and the step, so the result is bit for bit that of an
uninterrupted run on CPU. At the end: results.json, results.md and a loss curve (loss.png).
"""

from __future__ import annotations

import os

import jax
from absl import app, logging
from ml_collections import config_flags

from experiments import common, train_job

_CONFIG = config_flags.DEFINE_config_file("config", "configs/gradual.py", "Training config.")


def checkpoint_manager(workdir: str):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options)


def save(manager, trainer) -> None:
    import orbax.checkpoint as ocp

    step = int(trainer.state["step"])
    manager.save(step, args=ocp.args.StandardSave(trainer.state))
    manager.wait_until_finished()


def restore_latest(manager, trainer) -> int:
    """Loads the latest checkpoint into ``trainer``; returns its step (0 when none)."""
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        return 0
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), trainer.state)
    trainer.state = manager.restore(step, args=ocp.args.StandardRestore(template))
    logging.info("resumed from the checkpoint of step %d", step)
    return step


def loss_curve_png(logged: list, title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    axes.plot([s for s, _ in logged], [v for _, v in logged])
    axes.set_xlabel("step")
    axes.set_ylabel("training loss (mean NLL)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    resources = common.Resources()
    try:
        config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
        train_job.prepare(config, resources)
    except (TypeError, ValueError, FileNotFoundError) as err:
        raise app.UsageError(str(err)) from None

    trainer = train_job.Trainer(config, resources)
    manager = checkpoint_manager(config.workdir) if config.workdir else None
    if manager is not None:
        restore_latest(manager, trainer)
    every = config.train.checkpoint_every

    def on_step(step):
        if manager is not None and (step % every == 0 or step == config.train.steps):
            save(manager, trainer)

    logged = trainer.run(until=config.train.steps, on_step=on_step)
    metrics = {"rule": config.rule, "steps": config.train.steps,
               "final_loss": logged[-1][1] if logged else None,
               **train_job.evaluate(trainer, config, resources),
               "params_sha256": train_job.params_fingerprint(trainer.state["params"])}
    table = common.markdown_table([metrics], list(metrics))
    print(table)
    if config.workdir:
        common.write_json_atomic(os.path.join(config.workdir, "results.json"), {
            "config": config.to_dict(), "metrics": metrics, "curve": logged,
            "git": common.git_revision(), "packages": common.package_versions()})
        common.write_text_atomic(os.path.join(config.workdir, "results.md"), table + "\n")
        if logged:
            try:
                png = loss_curve_png(logged, f"{config.model}, rule {config.rule}")
                common.write_bytes_atomic(os.path.join(config.workdir, "loss.png"), png)
            except ImportError:
                logging.warning("matplotlib is not installed (extra 'plots'): no loss.png")
        print(f"wrote {config.workdir}")


if __name__ == "__main__":
    common.run_main(main)
