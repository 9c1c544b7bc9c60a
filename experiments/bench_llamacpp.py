r"""GGUF exports in llama.cpp: perplexity on jaxprune's evaluation windows and decode tokens/s.

  python -m experiments.bench_llamacpp --config=configs/bench_llamacpp.py \
      --config.models=dense=runs/gguf/dense/model.gguf --config.eval.path=DIR

Each window is evaluated from a fresh context with all logits kept, and the negative
log-likelihood of its tokens after the first is averaged over every window, as
``jaxprune.eval.perplexity`` does; decoding evaluates a prompt, then times greedy tokens one at
a time (the median of ``config.decode_repeats`` runs). Prints a markdown table and writes JSON
(``config.out``).
"""

from __future__ import annotations

import importlib
import math
import os
import time

import numpy as np
from absl import app
from ml_collections import config_flags

from experiments import common
from jaxprune import data, models
from jaxprune.eval import evaluation_windows

_CONFIG = config_flags.DEFINE_config_file("config", None, "llama.cpp benchmark config.")
COLUMNS = ["model", "file MB", "perplexity", "eval tokens/s", "decode tokens/s"]


def parse_models(spec: str) -> dict[str, str]:
    """``label=path,label=path`` -> {label: path}.

    Raises:
      ValueError: naming ``config.models`` for an empty list, a malformed entry or a missing
        file.
    """
    entries = [e for e in spec.split(",") if e]
    if not entries:
        raise ValueError("config.models is empty: give label=path.gguf entries, "
                         "comma-separated")
    models_by_label = {}
    for entry in entries:
        label, sep, path = entry.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"config.models entry {entry!r} is not label=path.gguf")
        if not os.path.isfile(path):
            raise ValueError(f"config.models: {label}'s file {path!r} does not exist")
        models_by_label[label] = path
    return models_by_label


def llama_cpp():
    """The ``llama_cpp`` package, or an error saying how to install it."""
    try:
        return importlib.import_module("llama_cpp")
    except ImportError:
        raise ImportError("the llama.cpp benchmark needs llama-cpp-python, which compiles "
                          "llama.cpp: make llamacpp") from None


def window_nll(llm, window: np.ndarray) -> float:
    """Summed negative log-likelihood of ``window[1:]`` given the tokens before each."""
    llm.reset()
    llm.eval(window.tolist())
    logits = np.asarray(llm.scores[: len(window) - 1], np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(window) - 1), window[1:]].sum())


def decode_rate(llm, prompt: np.ndarray, count: int, repeats: int) -> float:
    """Greedy tokens per second after ``prompt`` (the prompt's evaluation not timed), the
    median of ``repeats`` runs: one run of 128 tokens lasts under two seconds, and the 2-core
    machine's other work moves a single run by 20%."""
    rates = []
    for _ in range(repeats):
        llm.reset()
        llm.eval(prompt.tolist())
        start = time.perf_counter()
        for _ in range(count):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([token])
        rates.append(count / (time.perf_counter() - start))
    return float(np.median(rates))


def bench_model(label: str, path: str, windows: np.ndarray, config) -> dict:
    """One row: the file's size, perplexity and the two rates."""
    llm = llama_cpp().Llama(model_path=path, n_ctx=max(windows.shape[1], config.prompt_tokens
                                                         + config.decode_tokens),
                            logits_all=True, n_threads=config.threads, verbose=False)
    start = time.perf_counter()
    nll = sum(window_nll(llm, w) for w in windows)
    seconds = time.perf_counter() - start
    scored = windows.shape[0] * (windows.shape[1] - 1)
    return {"model": label, "file MB": os.path.getsize(path) / 2**20,
            "perplexity": math.exp(nll / scored), "eval tokens/s": windows.size / seconds,
            "decode tokens/s": decode_rate(llm, windows[0, :config.prompt_tokens],
                                           config.decode_tokens, config.decode_repeats)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
    with common.usage_errors():
        paths = parse_models(config.models)
        common.check_text_config("eval", config.eval)
        llama_cpp()
        _, tokenizer = models.load(config.tokenizer_model)
        text = data.load_text(config.eval.source, path=config.eval.path,
                              split=config.eval.split)
    tokens = data.tokenize_cached(text, tokenizer)
    windows = np.asarray(evaluation_windows(tokens, config.eval.window,
                                            max_windows=config.eval.max_windows,
                                            bos_id=tokenizer.sequence_start))
    rows = [bench_model(label, path, windows, config) for label, path in paths.items()]
    print(common.markdown_table(rows, COLUMNS, {"file MB": ".1f", "perplexity": ".2f",
                                                "eval tokens/s": ".0f",
                                                "decode tokens/s": ".1f"}))
    if config.out:
        common.write_json_atomic(config.out, {"config": config.to_dict(), "rows": rows})


if __name__ == "__main__":
    common.run_main(main)
