r"""Benchmark: evaluation throughput of jaxprune against transformers on the same CPU.

  python -m experiments.bench_eval --out=runs/bench_eval.json \
      [--eval_path=../shared/data/wikitext-2-raw] [--windows=32] [--batch_size=8]

Both engines score the same windows of the same dequantized SmolLM2 weights (transformers reads
the same GGUF) in float32. Each first runs one untimed batch (jaxprune compiles there), then
the timed windows. Prints a markdown table and writes JSON with the medians of --repeats runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
from absl import app, flags

from experiments import common
from jaxprune import data, models
from jaxprune.eval import evaluation_windows, perplexity

_MODEL = flags.DEFINE_string("model", "smollm2-135m", "Packaged model name.")
_EVAL_PATH = flags.DEFINE_string(
    "eval_path", "", "WikiText-2 raw directory; Python's help topics when empty.")
_WINDOWS = flags.DEFINE_integer("windows", 32, "Windows to time.")
_WINDOW = flags.DEFINE_integer("window", 512, "Tokens per window.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Windows per forward pass.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per engine; medians are reported.")
_OUT = flags.DEFINE_string("out", "", "JSON output path (optional).")


def time_jaxprune(model, tokens, windows_count):
    warm = perplexity(model, tokens, window=_WINDOW.value, batch_size=_BATCH.value,
                      max_windows=_BATCH.value, progress=False)
    del warm
    runs = [perplexity(model, tokens, window=_WINDOW.value, batch_size=_BATCH.value,
                       max_windows=windows_count, progress=False) for _ in range(_REPEATS.value)]
    return statistics.median(r.seconds for r in runs), runs[0].perplexity


def time_transformers(gguf_path, windows):
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    directory, name = os.path.split(gguf_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32).eval()

    def run(rows):
        total = 0.0
        with torch.inference_mode():
            for first in range(0, rows.shape[0], _BATCH.value):
                batch = torch.as_tensor(rows[first:first + _BATCH.value], dtype=torch.long)
                logits = model(batch[:, :-1]).logits
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                    reduction="sum")
                total += float(nll)
        return total

    run(windows[: _BATCH.value])
    seconds, total = [], 0.0
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        total = run(windows)
        seconds.append(time.perf_counter() - start)
    ppl = float(np.exp(total / (windows.shape[0] * (windows.shape[1] - 1))))
    return statistics.median(seconds), ppl, torch.__version__, transformers.__version__


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name, flag in (("windows", _WINDOWS), ("window", _WINDOW), ("batch_size", _BATCH),
                       ("repeats", _REPEATS)):
        if flag.value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {flag.value}")
    gguf_path = models.packaged_model_path(_MODEL.value)
    model, tokenizer = models.load_gguf(gguf_path)
    source = ("wikitext2", _EVAL_PATH.value) if _EVAL_PATH.value else ("pydoc", "")
    tokens = data.tokenize_cached(data.load_text(source[0], path=source[1]), tokenizer)
    windows = evaluation_windows(tokens, _WINDOW.value, _WINDOWS.value)
    count = windows.shape[0]
    jax_seconds, jax_ppl = time_jaxprune(model, tokens, count)
    torch_seconds, torch_ppl, torch_version, tf_version = time_transformers(gguf_path, windows)
    tokens_timed = count * _WINDOW.value
    rows = [
        {"engine": "jaxprune (JAX, jit)", "seconds": jax_seconds,
         "tokens/s": tokens_timed / jax_seconds, "perplexity": jax_ppl},
        {"engine": f"transformers {tf_version} (torch {torch_version})",
         "seconds": torch_seconds, "tokens/s": tokens_timed / torch_seconds,
         "perplexity": torch_ppl},
    ]
    ratio = torch_seconds / jax_seconds
    print(f"{count} windows x {_WINDOW.value} tokens of {source[0]}, batch {_BATCH.value}, "
          f"median of {_REPEATS.value}, {os.cpu_count()} CPUs ({platform.machine()})")
    print(common.markdown_table(rows, ["engine", "seconds", "tokens/s", "perplexity"]))
    print(f"jaxprune / transformers throughput: {ratio:.2f}x")
    if _OUT.value:
        import jax

        common.write_json_atomic(_OUT.value, {
            "model": _MODEL.value, "text": source[0], "windows": count, "window": _WINDOW.value,
            "batch_size": _BATCH.value, "repeats": _REPEATS.value, "rows": rows,
            "throughput_ratio": ratio, "cpus": os.cpu_count(), "machine": platform.machine(),
            "jax": jax.__version__,
        })
        print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    common.run_main(main)
