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
import resource
import time

import jax
from absl import app, logging
from flax import nnx
from ml_collections import config_flags

from experiments import common
from jaxprune import data, oneshot

_CONFIG = config_flags.DEFINE_config_file("config", None, "One-shot pruning configuration.")


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def oneshot_settings(config) -> oneshot.OneShotConfig:
    """The engine's settings from the experiment config."""
    return oneshot.OneShotConfig(
        method=config.method, sparsity=config.sparsity, pattern=config.pattern,
        layers=config.layers, order=config.order, batch_size=config.batch_size,
        blocksize=config.blocksize, damp=config.damp, allocation=config.allocation,
        owl_lambda=config.owl_lambda, owl_m=config.owl_m, mesh_data=config.mesh_data,
        mesh_model=config.mesh_model)


def check_config(config) -> None:
    """Checks what can be checked before loading anything.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    common.check_eval_config(config)
    calib = config.calibration
    if calib.source not in data.SOURCES:
        raise ValueError(f"config.calibration.source must be one of {list(data.SOURCES)}, got "
                         f"{calib.source!r}")
    if calib.source in ("file", "wikitext2") and not calib.path:
        raise ValueError(f"config.calibration.path is required for source {calib.source!r}")
    for field in ("num_segments", "length"):
        value = calib[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config.calibration.{field} must be a positive integer, got "
                             f"{value!r}")
    if config.method not in oneshot.METHODS:
        raise ValueError(f"config.method must be one of {list(oneshot.METHODS)}, got "
                         f"{config.method!r}")


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
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/wanda.py")
    # Both must happen before JAX starts its backends, that is before any array exists.
    if config.num_cpu_devices:
        jax.config.update("jax_num_cpu_devices", config.num_cpu_devices)
    if config.distributed:
        jax.distributed.initialize()
    try:
        check_config(config)
        if (config.save_checkpoint or config.save_hf) and not config.workdir:
            raise ValueError("config.workdir is required to save the pruned model")
        for wanted, name in ((config.save_checkpoint, "checkpoint"), (config.save_hf, "hf")):
            if wanted and os.path.exists(os.path.join(config.workdir, name)):
                raise ValueError(f"{os.path.join(config.workdir, name)} exists already; choose "
                                 "another config.workdir or remove it")
        model, tokenizer = common.load_model(config)
        segments = common.calibration_segments(config.calibration, tokenizer)
        settings = oneshot_settings(config)
        oneshot.plan_oneshot(model, segments, settings)
        eval_tokens = common.evaluation_tokens(config.eval, tokenizer)
    except (TypeError, ValueError, FileNotFoundError) as err:
        raise app.UsageError(str(err)) from None

    rows = []
    if config.evaluate_dense:
        rows.append({"method": "dense", "pattern": "-", "sparsity": 0.0,
                     "perplexity": common.evaluate(model, eval_tokens, config.eval).perplexity,
                     "prune seconds": 0.0, "peak memory MB": round(peak_memory_mb())})
    start = time.perf_counter()
    result = oneshot.prune_oneshot(model, segments, settings)
    seconds = time.perf_counter() - start
    memory = peak_memory_mb()
    logging.info("pruned in %.1f s, peak memory %.0f MB", seconds, memory)
    rows.append({
        "method": config.method + ("" if config.allocation == "uniform" else "+owl"),
        "pattern": config.pattern,
        "sparsity": oneshot.achieved_sparsity(result),
        "perplexity": common.evaluate(result.model, eval_tokens, config.eval).perplexity,
        "prune seconds": round(seconds, 1),
        "peak memory MB": round(memory),
    })
    table = common.markdown_table(rows, list(rows[0]), {"prune seconds": ".1f"})
    print(table)
    if config.workdir:
        written = save_outputs(config, result, tokenizer)
        common.write_json_atomic(os.path.join(config.workdir, "results.json"), {
            "config": config.to_dict(), "rows": rows, "layers": result.layers,
            "block_sparsity": result.block_sparsity, "machine": platform.machine(),
            "cpus": os.cpu_count(), "jax": jax.__version__, "saved": written})
        common.write_text_atomic(os.path.join(config.workdir, "results.md"), table + "\n")
        print(f"wrote {config.workdir}")


if __name__ == "__main__":
    app.run(main)
