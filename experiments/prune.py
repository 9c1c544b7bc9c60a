r"""One-shot pruning of a real LLM with calibration data, then perplexity.

  python -m experiments.prune --config=configs/wanda.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/wanda

Prints a table (method, pattern, achieved sparsity, perplexity, pruning wall time, peak memory)
and, with a workdir, writes it as results.json and results.md; optionally saves the pruned model
as an orbax checkpoint and a Hugging Face directory.
"""

from __future__ import annotations

import os
import platform

import jax
from absl import app, logging
from flax import nnx
from ml_collections import config_flags

from experiments import common, oneshot_job
from experiments.oneshot_job import DENSE

_CONFIG = config_flags.DEFINE_config_file("config", None, "One-shot pruning configuration.")


def save_outputs(config, result, tokenizer) -> list[str]:
    """Saves the pruned model as asked; returns what was written."""
    written = []
    if config.save_checkpoint:
        import orbax.checkpoint as ocp

        path = os.path.abspath(os.path.join(config.workdir, "checkpoint"))
        with ocp.StandardCheckpointer() as checkpointer:  # writes to a temporary dir first
            checkpointer.save(path, {"params": nnx.state(result.model, nnx.Param),
                                     "masks": result.masks})
        written.append(path)
    if config.save_hf:
        from jaxprune import models

        path = os.path.join(config.workdir, "hf")
        models.save_hf_dir(result.model, path, tokenizer=tokenizer)
        written.append(path)
    return written


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config=configs/wanda.py")
    config = _CONFIG.value
    # Both must happen before JAX starts its backends, that is before any array exists.
    if config.num_cpu_devices:
        jax.config.update("jax_num_cpu_devices", config.num_cpu_devices)
    if config.distributed:
        jax.distributed.initialize()
    resources = common.Resources()
    try:
        config = common.apply_runlocal(config, common.command_line_fields())
        oneshot_job.check_config(config)
        if (config.save_checkpoint or config.save_hf) and not config.workdir:
            raise ValueError("config.workdir is required to save the pruned model")
        if (config.save_checkpoint or config.save_hf) and config.method == DENSE:
            raise ValueError("config.method 'dense' prunes nothing; there is no model to save")
        for wanted, name in ((config.save_checkpoint, "checkpoint"), (config.save_hf, "hf")):
            if wanted and os.path.exists(os.path.join(config.workdir, name)):
                raise ValueError(f"{os.path.join(config.workdir, name)} exists already; choose "
                                 "another config.workdir or remove it")
        oneshot_job.prepare(config, resources)
    except (TypeError, ValueError, FileNotFoundError) as err:
        raise app.UsageError(str(err)) from None

    rows = []
    if config.evaluate_dense and config.method != DENSE:
        dense = oneshot_job.run_point(common.copy_with(config, method=DENSE), resources)
        rows.append({**dense["metrics"], "prune seconds": 0.0,
                     "peak memory MB": round(common.peak_memory_mb())})
    common.reset_peak_memory()
    point = oneshot_job.run_point(config, resources)
    logging.info("pruned in %.1f s, peak memory %.0f MB", point["timings"]["prune_seconds"],
                 common.peak_memory_mb())
    rows.append({**point["metrics"], "prune seconds": round(point["timings"]["prune_seconds"], 1),
                 "peak memory MB": round(common.peak_memory_mb())})
    columns = ["method", "pattern", "sparsity", "perplexity", "prune seconds", "peak memory MB"]
    table = common.markdown_table(rows, columns, {"prune seconds": ".1f"})
    print(table)
    if config.workdir:
        result = point["result"]
        written = save_outputs(config, result, resources.model(config)[1]) if result else []
        common.write_json_atomic(os.path.join(config.workdir, "results.json"), {
            "config": config.to_dict(), "rows": rows,
            "layers": result.layers if result else [],
            "block_sparsity": result.block_sparsity if result else [],
            "machine": platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "saved": written})
        common.write_text_atomic(os.path.join(config.workdir, "results.md"), table + "\n")
        print(f"wrote {config.workdir}")


if __name__ == "__main__":
    common.run_main(main)
