"""The prune binary's job, flag-free so that ``experiments.prune`` and
``experiments.compress`` share it: prune (recover, quantize), evaluate, save the model as asked
(orbax, Hugging Face, GGUF, compressed-tensors) and write results.json and results.md."""

from __future__ import annotations

import json
import os
import platform
import shutil

import jax
from absl import logging
from flax import nnx

from experiments import common, oneshot_job
from experiments.oneshot_job import DENSE
from jaxprune import oneshot

COLUMNS = ["method", "pattern", "sparsity", "perplexity", "prune seconds", "peak memory MB"]


# The GGUF export (config.save_gguf) and the compressed-tensors one (config.save_compressed),
# under the workdir.
GGUF_FILE = "model.gguf"
COMPRESSED_DIR = "compressed"


def columns(rows: list[dict]) -> list[str]:
    """The table's columns: ``COLUMNS``, the packed size of quantized rows and the zero-shot
    figures the rows have."""
    size = ["weights_mb"] if all("weights_mb" in row for row in rows) else []
    return COLUMNS + size + common.zeroshot_columns(rows)


def save_outputs(config, model, result, tokenizer) -> list[str]:
    """Saves the job's model as asked: the pruned one, or for method "dense" the loaded one
    (the runtimes' baseline; ``result`` is None then). Returns what was written (a streamed
    run wrote its directory as it went)."""
    if isinstance(result, oneshot.StreamedResult):
        return [result.directory]
    model = result.model if result else model
    written = []
    if config.save_checkpoint:
        import orbax.checkpoint as ocp

        path = os.path.abspath(os.path.join(config.workdir, "checkpoint"))
        tree = {"params": nnx.state(model, nnx.Param), "masks": result.masks}
        with ocp.StandardCheckpointer() as checkpointer:  # writes to a temporary dir first
            # Under jax.distributed every process takes part in the save.
            checkpointer.save(path, common.replicated_over_processes(tree))
        written.append(path)
    if config.save_hf and jax.process_index() == 0:
        from jaxprune import models

        path = os.path.join(config.workdir, "hf")
        models.save_hf_dir(model, path, tokenizer=tokenizer)
        written.append(path)
    if config.save_gguf and jax.process_index() == 0:
        from jaxprune.models import gguf_export

        path = os.path.join(config.workdir, GGUF_FILE)
        gguf_export.save_gguf(model, path, tokenizer=tokenizer,
                              tensor_type=config.save_gguf)
        written.append(path)
    if config.save_compressed and jax.process_index() == 0:
        from jaxprune.models import compressed_export

        path = os.path.join(config.workdir, COMPRESSED_DIR)
        structure = "2:4" if config.pattern == "2:4" else (
            "unstructured" if config.method != DENSE else None)
        compressed_export.save_compressed_tensors(model, path, result.quantized,
                                                  sparsity=structure, tokenizer=tokenizer)
        written.append(path)
    return written


def clear_unfinished(workdir: str) -> None:
    """Removes what an interrupted run of this same config left (it has no results.json):
    the saved models are redone, identically, by this run."""
    for name in os.listdir(workdir):
        if name in ("checkpoint", "hf", GGUF_FILE, COMPRESSED_DIR) or name.startswith(
                ("checkpoint.orbax-checkpoint-tmp", ".export-")):
            logging.info("removing %s, left by an interrupted run of this config", name)
            path = os.path.join(workdir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


def prune_and_evaluate(config, resources) -> tuple[list[dict], dict]:
    """The dense row (``config.evaluate_dense``) and the pruned row, and the pruned point."""
    rows = []
    # Finished zero-shot tasks are kept in the claimed work directory (one process writes it).
    keep_dir = config.workdir if not config.distributed else ""
    if config.evaluate_dense and config.method != DENSE:
        dense = oneshot_job.run_point(common.copy_with(config, method=DENSE), resources,
                                      keep_dir=os.path.join(keep_dir, "dense") if keep_dir else "")
        rows.append({**dense["metrics"], "prune seconds": 0.0,
                     "peak memory MB": round(common.peak_memory_mb())})
    common.reset_peak_memory()
    point = oneshot_job.run_point(config, resources, keep_dir=keep_dir)
    logging.info("pruned in %.1f s, peak memory %.0f MB", point["timings"]["prune_seconds"],
                 common.peak_memory_mb())
    rows.append({**point["metrics"], "prune seconds": round(point["timings"]["prune_seconds"], 1),
                 "peak memory MB": round(common.peak_memory_mb())})
    return rows, point


def write_results(config, rows: list[dict], result, model, tokenizer) -> None:
    """The saved models, then results.json (written last: it marks the run finished)."""
    written = save_outputs(config, model, result, tokenizer)
    if jax.process_index() != 0:  # under jax.distributed, process 0 writes the results
        return
    common.write_json_atomic(os.path.join(config.workdir, "results.json"), {
        "config": config.to_dict(), "rows": rows,
        "layers": result.layers if result else [],
        "block_sparsity": result.block_sparsity if result else [],
        "machine": platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__,
        "saved": written})
    table = common.markdown_table(rows, columns(rows), {"prune seconds": ".1f"})
    common.write_text_atomic(os.path.join(config.workdir, "results.md"), table + "\n")


def run_prune(config_value) -> None:
    """The prune binary's job on a config: prune (recover, quantize), evaluate, save, write
    the results; a finished run of the same config in the workdir is printed, not redone."""
    common.start_backends(config_value)  # before JAX starts its backends
    with common.job(config_value, oneshot_job) as (config, resources, state):
        finished = os.path.join(config.workdir, "results.json")
        # Under jax.distributed every process must take the same path: no shortcut there.
        if state == "resume" and os.path.exists(finished) and not config.distributed:
            with open(finished) as f:
                rows = json.load(f)["rows"]
            print(common.markdown_table(rows, columns(rows), {"prune seconds": ".1f"}))
            print(f"{config.workdir} holds the finished run of this config; nothing to do")
            return
        if state == "resume":
            clear_unfinished(config.workdir)
        rows, point = prune_and_evaluate(config, resources)
        print(common.markdown_table(rows, columns(rows), {"prune seconds": ".1f"}))
        if config.workdir:
            write_results(config, rows, point["result"], *resources.model(config))
            if jax.process_index() == 0:
                print(f"wrote {config.workdir}")

