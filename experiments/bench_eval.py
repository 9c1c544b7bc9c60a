r"""Benchmark: evaluation throughput of jaxprune against transformers on the same CPU.

  python -m experiments.bench_eval --config=configs/bench_eval.py \
      --config.eval_path=../shared/data/wikitext-2-raw --config.out=runs/bench_eval.json
  python -m experiments.bench_eval --config=configs/bench_eval.py:runlocal

Both engines score the same windows of the same dequantized SmolLM2 weights (transformers reads
the same GGUF) in float32. Each first runs one untimed batch (jaxprune compiles there), then
the timed windows. Prints a markdown table and writes JSON with the medians of
``config.repeats`` runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
from absl import app
from ml_collections import config_flags

from experiments import common
from jaxprune import data, models
from jaxprune.eval import evaluation_windows, perplexity

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench_eval.py",
                                          "Benchmark configuration.")


def time_jaxprune(config, model, tokens, windows_count):
    """Median seconds of jaxprune's perplexity over the windows, after one untimed batch."""
    perplexity(model, tokens, window=config.window, batch_size=config.batch_size,
               max_windows=config.batch_size, progress=False)
    runs = [perplexity(model, tokens, window=config.window, batch_size=config.batch_size,
                       max_windows=windows_count, progress=False)
            for _ in range(config.repeats)]
    return statistics.median(r.seconds for r in runs), runs[0].perplexity


def time_transformers(config, gguf_path, windows):
    """Median seconds of transformers' loss over the same windows of the same GGUF."""
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    directory, name = os.path.split(gguf_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32).eval()

    def run(rows):
        total = 0.0
        with torch.inference_mode():
            for first in range(0, rows.shape[0], config.batch_size):
                batch = torch.as_tensor(rows[first:first + config.batch_size], dtype=torch.long)
                logits = model(batch[:, :-1]).logits
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                    reduction="sum")
                total += float(nll)
        return total

    run(windows[: config.batch_size])
    seconds, total = [], 0.0
    for _ in range(config.repeats):
        start = time.perf_counter()
        total = run(windows)
        seconds.append(time.perf_counter() - start)
    ppl = float(np.exp(total / (windows.shape[0] * (windows.shape[1] - 1))))
    return statistics.median(seconds), ppl, torch.__version__, transformers.__version__


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
    for name in ("windows", "window", "batch_size", "repeats"):
        if not isinstance(config[name], int) or config[name] < 1:
            raise app.UsageError(f"config.{name} must be an integer >= 1, got {config[name]!r}")
    gguf_path = models.packaged_model_path(config.model)
    model, tokenizer = models.load_gguf(gguf_path)
    source = ("wikitext2", config.eval_path) if config.eval_path else ("pydoc", "")
    tokens = data.tokenize_cached(data.load_text(source[0], path=source[1]), tokenizer)
    windows = evaluation_windows(tokens, config.window, config.windows)
    count = windows.shape[0]
    jax_seconds, jax_ppl = time_jaxprune(config, model, tokens, count)
    torch_seconds, torch_ppl, torch_version, tf_version = time_transformers(
        config, gguf_path, windows)
    tokens_timed = count * config.window
    rows = [
        {"engine": "jaxprune (JAX, jit)", "seconds": jax_seconds,
         "tokens/s": tokens_timed / jax_seconds, "perplexity": jax_ppl},
        {"engine": f"transformers {tf_version} (torch {torch_version})",
         "seconds": torch_seconds, "tokens/s": tokens_timed / torch_seconds,
         "perplexity": torch_ppl},
    ]
    report(config, rows, source[0], count, torch_seconds / jax_seconds)


def report(config, rows: list[dict], text: str, count: int, ratio: float) -> None:
    """Prints the table and writes the JSON of ``config.out``."""
    print(f"{count} windows x {config.window} tokens of {text}, batch {config.batch_size}, "
          f"median of {config.repeats}, {os.cpu_count()} CPUs ({platform.machine()})")
    print(common.markdown_table(rows, ["engine", "seconds", "tokens/s", "perplexity"]))
    print(f"jaxprune / transformers throughput: {ratio:.2f}x")
    if config.out:
        import jax

        common.write_json_atomic(config.out, {
            "model": config.model, "text": text, "windows": count, "window": config.window,
            "batch_size": config.batch_size, "repeats": config.repeats, "rows": rows,
            "throughput_ratio": ratio, "cpus": os.cpu_count(), "machine": platform.machine(),
            "jax": jax.__version__,
        })
        print(f"wrote {config.out}")


if __name__ == "__main__":
    common.run_main(main)
