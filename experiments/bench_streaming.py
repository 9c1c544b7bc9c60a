r"""Memory and time of one-shot pruning streamed block by block against the whole model.

  python -m experiments.bench_streaming --config=configs/bench_streaming.py \
      --config.out=runs/bench_streaming/bench_streaming.json
  python -m experiments.bench_streaming --config=configs/bench_streaming.py:runlocal

Writes a random Llama-shaped checkpoint per size (bfloat16 safetensors, one shard per block,
never the whole model in memory; kept in ``config.models_dir``), then runs ``experiments.prune``
with each method at 2:4 on it, streamed (``config.stream=True``) and whole (the model loaded),
each in its own process, and records the process's peak resident memory (``wait4``), its wall
time and the job's pruning seconds and perplexity (the same pruned weights in both modes; the
perplexities agree up to the rounding of bfloat16 activations, which XLA may skip inside the
whole model's one program but not between the streamed blocks' programs). A whole-model run
that would not fit ``config.memory_limit_gb`` is reported, not run. Prints a markdown table
and the slopes of memory and time against the parameter count; writes JSON and a PNG.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import ml_dtypes
import numpy as np
from absl import app
from flax import nnx
from ml_collections import config_flags

from experiments import common
from jaxprune import models, paths
from jaxprune.models.weights import hf_name

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench_streaming.py",
                                          "Benchmark configuration.")

SHAPES = {
    "tiny": models.LlamaConfig(vocab_size=256, hidden_size=64, num_layers=4, num_heads=4,
                               num_kv_heads=2, intermediate_size=128, head_dim=16,
                               tie_word_embeddings=True),
    "135m": models.LlamaConfig(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9,
                               num_kv_heads=3, intermediate_size=1536, head_dim=64,
                               tie_word_embeddings=True, rope_theta=100000.0),
    "360m": models.LlamaConfig(vocab_size=49152, hidden_size=960, num_layers=32, num_heads=15,
                               num_kv_heads=5, intermediate_size=2560, head_dim=64,
                               tie_word_embeddings=True, rope_theta=100000.0),
    "1.2b": models.LlamaConfig(vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32,
                               num_kv_heads=8, intermediate_size=8192, head_dim=64,
                               tie_word_embeddings=True, rope_theta=500000.0),
    "3b": models.LlamaConfig(vocab_size=128256, hidden_size=3072, num_layers=28, num_heads=24,
                             num_kv_heads=8, intermediate_size=8192, head_dim=128,
                             tie_word_embeddings=True, rope_theta=500000.0),
}
MODES = ("streamed", "whole")


def check_config(config) -> tuple[list[str], list[str], list[str]]:
    """The sizes, methods and modes, checked before any work.

    Raises:
      app.UsageError: naming the field, the value and what is allowed.
    """
    chosen = []
    for field, allowed in (("sizes", SHAPES), ("methods", ("wanda", "sparsegpt")),
                           ("modes", MODES)):
        names = [n for n in config[field].split(",") if n]
        bad = [n for n in names if n not in allowed]
        if not names or bad:
            raise app.UsageError(f"config.{field} must name some of {list(allowed)}, got "
                                 f"{config[field]!r}")
        chosen.append(names)
    if config.param_dtype not in common.PARAM_DTYPES:
        raise app.UsageError(f"config.param_dtype must be one of {list(common.PARAM_DTYPES)}, "
                             f"got {config.param_dtype!r}")
    return tuple(chosen)


def write_random_checkpoint(shape: models.LlamaConfig, directory: str, dtype, seed: int = 0):
    """A Hugging Face directory of random weights (normal, std 0.02; norms 1), one shard per
    block and one for the embedding, norm and head, built a shard at a time; a byte-level
    tokenizer. Written beside ``directory`` and renamed into place."""
    rng = np.random.default_rng(seed)
    state = nnx.state(models.abstract_llama(shape), nnx.Param)
    shards: dict[str, dict[str, tuple]] = {}
    for path, leaf in paths.leaves_with_paths(state):
        name, transposed = hf_name(path)
        block = path.split("/")[1] if path.startswith("layers/") else "rest"
        dims = tuple(reversed(leaf.shape)) if transposed else tuple(leaf.shape)
        shards.setdefault(block, {})[name] = (dims, path.endswith("scale"))
    staging = tempfile.mkdtemp(prefix=".random-", dir=os.path.dirname(os.path.abspath(directory)))
    from safetensors.numpy import save_file

    weight_map = {}
    for i, tensors in enumerate(shards.values()):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        arrays = {name: (np.ones(dims, np.float32) if is_norm else
                         rng.standard_normal(dims, np.float32) * 0.02).astype(dtype)
                  for name, (dims, is_norm) in tensors.items()}
        save_file(arrays, os.path.join(staging, file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(arrays, file))
    with open(os.path.join(staging, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(staging, "config.json"), "w") as f:
        json.dump(shape.to_hf_dict(torch_dtype=np.dtype(dtype).name), f, indent=2)
    models.byte_tokenizer().save(os.path.join(staging, "tokenizer.json"))
    os.replace(staging, directory)


def checkpoint_for(config, size: str, models_dir: str) -> str:
    """The random checkpoint of ``size`` in ``config.param_dtype``, written once and reused."""
    directory = os.path.join(models_dir, f"{size}-{config.param_dtype}")
    os.makedirs(models_dir, exist_ok=True)
    if not os.path.isdir(directory):
        started = time.perf_counter()
        dtype = ml_dtypes.bfloat16 if config.param_dtype == "bfloat16" else np.float32
        write_random_checkpoint(SHAPES[size], directory, dtype)
        print(f"wrote {directory} in {time.perf_counter() - started:.0f} s", flush=True)
    return directory


def prune_command(config, method: str, mode: str, checkpoint: str, workdir: str) -> list[str]:
    """The prune binary's command line for one point."""
    return [sys.executable, "-m", "experiments.prune", f"--config=configs/{method}.py",
            f"--config.model={checkpoint}", "--config.pattern=2:4", "--config.sparsity=0.5",
            f"--config.param_dtype={config.param_dtype}", "--config.calibration.source=pydoc",
            f"--config.calibration.num_segments={config.num_segments}",
            f"--config.calibration.length={config.length}",
            f"--config.batch_size={config.batch_size}", "--config.eval.source=pydoc",
            "--config.eval.max_windows=1", "--config.eval.window=64",
            "--config.eval.batch_size=1", f"--config.stream={mode == 'streamed'}",
            f"--config.workdir={workdir}"]


def whole_model_gb(shape: models.LlamaConfig, param_dtype: str) -> float:
    """The peak memory of a whole-model run, estimated: the model and its pruned clone in
    ``param_dtype``, and, for narrower dtypes, the float32 copy of every weight that XLA's CPU
    backend (no bfloat16 matrix product) makes for the evaluation's forward pass. Measured at
    1.2B parameters in bfloat16: 10.3 GB against 9.9 estimated."""
    bytes_each = np.dtype(common.PARAM_DTYPES[param_dtype]).itemsize
    return shape.num_params() * (2 * bytes_each + (4 if bytes_each < 4 else 0)) / 1e9


def run_point(config, size: str, method: str, mode: str, checkpoint: str) -> dict:
    """One prune run in its own process: its peak resident memory, wall time and row."""
    shape = SHAPES[size]
    row = {"size": size, "params (B)": round(shape.num_params() / 1e9, 3), "method": method,
           "mode": mode}
    need_gb = whole_model_gb(shape, config.param_dtype)
    if mode == "whole" and need_gb > config.memory_limit_gb:
        return {**row, "note": f"not run: about {need_gb:.0f} GB"}
    with tempfile.TemporaryDirectory() as workdir:
        log_path = os.path.join(workdir, "log.txt")
        started = time.perf_counter()
        with open(log_path, "w") as log:
            process = subprocess.Popen(prune_command(config, method, mode, checkpoint,
                                                     os.path.join(workdir, "run")),
                                       stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status):
            with open(log_path) as f:
                raise RuntimeError(f"{size} {method} {mode}: the prune binary failed:\n"
                                   f"{f.read()[-3000:]}")
        with open(os.path.join(workdir, "run", "results.json")) as f:
            result = json.load(f)["rows"][-1]
    return {**row, "wall seconds": round(wall, 1), "prune seconds": result["prune seconds"],
            "peak memory MB": round(usage.ru_maxrss / 1024), "perplexity": result["perplexity"]}


def slopes(rows: list[dict]) -> list[dict]:
    """Least-squares lines of peak memory and pruning time against parameters (billions), per
    method and mode, over the points that ran."""
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for mode in MODES:
            ran = [r for r in rows if r["method"] == method and r["mode"] == mode
                   and "peak memory MB" in r]
            if len(ran) < 2:
                continue
            x = np.array([r["params (B)"] for r in ran])
            memory = np.polyfit(x, [r["peak memory MB"] / 1024 for r in ran], 1)
            seconds = np.polyfit(x, [r["prune seconds"] for r in ran], 1)
            lines.append({"method": method, "mode": mode,
                          "GB per B params": round(memory[0], 3), "GB at 0": round(memory[1], 3),
                          "seconds per B params": round(seconds[0], 1),
                          "seconds at 0": round(seconds[1], 1)})
    return lines


def plot(rows: list[dict], path: str) -> None:
    """Peak memory and pruning time against model size, a line per method and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"wanda": "tab:blue", "sparsegpt": "tab:orange"}
    for method in dict.fromkeys(r["method"] for r in rows):
        for mode, style, marker in (("streamed", "-", "o"), ("whole", "--", "s")):
            ran = [r for r in rows if r["method"] == method and r["mode"] == mode
                   and "peak memory MB" in r]
            if not ran:
                continue
            x = [r["params (B)"] for r in ran]
            label = f"{method}, {mode}"
            axes[0].plot(x, [r["peak memory MB"] / 1024 for r in ran], style, marker=marker,
                         color=colours.get(method), label=label)
            axes[1].plot(x, [r["prune seconds"] / 60 for r in ran], style, marker=marker,
                         color=colours.get(method), label=label)
    for ax, ylabel in ((axes[0], "peak resident memory (GB)"),
                       (axes[1], "pruning time (minutes)")):
        ax.set_xlabel("parameters (billions)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("One-shot 2:4 pruning, streamed block by block vs whole model "
                 "(random bfloat16 checkpoints, 2 CPU cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
    sizes, methods, modes = check_config(config)
    scratch = None if config.models_dir else tempfile.mkdtemp(prefix="bench-streaming-")
    models_dir = config.models_dir or scratch
    rows = []
    try:
        for size in sizes:
            checkpoint = checkpoint_for(config, size, models_dir)
            for method in methods:
                for mode in modes:
                    rows.append(run_point(config, size, method, mode, checkpoint))
                    print(rows[-1], flush=True)
                    write_results(config, rows)  # a stopped run keeps its finished points
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    print(common.markdown_table(rows, columns, {"params (B)": ".3f", "wall seconds": ".1f",
                                                "prune seconds": ".1f", "perplexity": ".4f"}))
    lines = slopes(rows)
    if lines:
        print(common.markdown_table(lines, list(lines[0])))
    if config.out:
        plot(rows, os.path.splitext(config.out)[0] + ".png")
        print(f"wrote {config.out}")


def write_results(config, rows: list[dict]) -> None:
    """The JSON of the points so far (atomically), when ``config.out`` is set."""
    if config.out:
        common.write_json_atomic(config.out, {"config": config.to_dict(), "rows": rows,
                                              "slopes": slopes(rows), "cpus": os.cpu_count()})


if __name__ == "__main__":
    common.run_main(main)
