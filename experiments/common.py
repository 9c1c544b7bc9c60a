"""Plumbing shared by the experiment binaries: config checks, model and text loading, output."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxprune import data, models
from jaxprune.eval import perplexity

PARAM_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` so that ``path`` is either absent, old or complete.

    The file is written next to its destination and renamed into place, so a killed process
    never leaves a half-written file behind.

    Args:
      path: destination file; its directory is created when missing.
      text: the content.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes ``payload`` as indented JSON, atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


def check_eval_config(config) -> None:
    """Checks ``config.model``, ``config.param_dtype`` and ``config.eval`` before any work.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    if config.param_dtype not in PARAM_DTYPES:
        raise ValueError(f"config.param_dtype must be one of {sorted(PARAM_DTYPES)}, got "
                         f"{config.param_dtype!r}")
    ev = config.eval
    if ev.source not in data.SOURCES:
        raise ValueError(f"config.eval.source must be one of {list(data.SOURCES)}, got "
                         f"{ev.source!r}")
    if ev.source in ("wikitext2", "file") and not ev.path:
        what = "directory holding wiki.test.raw" if ev.source == "wikitext2" else "text file"
        raise ValueError(f"config.eval.path is required for source {ev.source!r} (the {what})")
    for field, minimum in (("window", 2), ("batch_size", 1)):
        value = ev[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"config.eval.{field} must be an integer >= {minimum}, got {value!r}")
    if ev.max_windows is not None and (not isinstance(ev.max_windows, int) or ev.max_windows < 1):
        raise ValueError(f"config.eval.max_windows must be a positive integer or None, got "
                         f"{ev.max_windows!r}")


def load_model(config):
    """The model and tokenizer named by ``config.model``, in ``config.param_dtype``."""
    model, tokenizer = models.load(config.model, param_dtype=PARAM_DTYPES[config.param_dtype])
    if tokenizer is None:
        raise ValueError(f"config.model {config.model!r} has no tokenizer (tokenizer.json)")
    return model, tokenizer


def evaluation_tokens(eval_config, tokenizer) -> np.ndarray:
    """Token stream of ``eval_config.source`` (cached on disk after the first run)."""
    text = data.load_text(eval_config.source, path=eval_config.path, split=eval_config.split)
    return data.tokenize_cached(text, tokenizer)


def calibration_segments(calibration_config, tokenizer) -> np.ndarray:
    """The calibration batch ``[num_segments, length]`` that ``calibration_config`` describes."""
    c = calibration_config
    text = data.load_text(c.source, path=c.path, split=c.split)
    return data.calibration_segments(data.tokenize_cached(text, tokenizer), c.num_segments,
                                     c.length, seed=c.seed, contiguous=c.contiguous)


def evaluate(model, tokens: np.ndarray, eval_config):
    """Perplexity of ``model`` on ``tokens`` with the windows of ``eval_config``."""
    return perplexity(model, tokens, window=eval_config.window,
                      batch_size=eval_config.batch_size, max_windows=eval_config.max_windows)


def markdown_table(rows: list[dict], columns: list[str],
                   formats: dict[str, str] | None = None) -> str:
    """A markdown table of ``rows`` with the given columns.

    Args:
      rows: one dict per row.
      columns: keys to show, in order.
      formats: format spec per column (such as ``".1f"``); other floats get ``".4f"``.
    """
    formats = formats or {}

    def cell(column, value):
        if column in formats:
            return format(value, formats[column])
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
