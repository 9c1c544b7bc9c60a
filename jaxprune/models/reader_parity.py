"""How an independent reader sees an exported model: transformers' logits for a GGUF file or a
compressed-tensors directory, set against the logits jaxprune computes for the same tokens.

transformers (with torch, and the ``gguf`` or ``compressed-tensors`` package for the format)
is imported only when called: it is an optional dependency (extra ``reference``).
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from jaxprune.models import compressed_export, gguf_export, gguf_io

__all__ = ["check_gguf_types", "exports_read_back", "jaxprune_logits", "logit_agreement",
           "next_token_perplexity", "transformers_logits"]


def transformers_logits(directory: str, tokens: np.ndarray, *, gguf_file: str | None = None,
                        batch_size: int = 2) -> np.ndarray:
    """Logits of the model transformers loads from ``directory``, in float32.

    Args:
      directory: a compressed-tensors (or Hugging Face) directory, or the folder of a GGUF file.
      tokens: ``[batch, length]`` token ids.
      gguf_file: the GGUF file's name inside ``directory`` (``None``: not a GGUF).
      batch_size: sequences per forward pass.

    Returns:
      ``[batch, length, vocab]`` float32 logits.
    """
    import torch
    import transformers

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32,
                                                              **kwargs)
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.tensor(tokens[i:i + batch_size])).logits.numpy()
                               for i in range(0, len(tokens), batch_size)])


def jaxprune_logits(model, tokens: np.ndarray, *, batch_size: int = 2) -> np.ndarray:
    """``model``'s logits for ``tokens`` (``[batch, length]``), in float32, ``batch_size``
    sequences at a time."""
    import jax.numpy as jnp

    return np.concatenate([np.asarray(model(jnp.asarray(tokens[i:i + batch_size])), np.float32)
                           for i in range(0, len(tokens), batch_size)])


def next_token_perplexity(logits: np.ndarray, tokens: np.ndarray) -> float:
    """Perplexity of each window's tokens after the first, from ``logits`` ``[batch, length,
    vocab]`` (in float64, one window at a time)."""
    nll = []
    for window_logits, window in zip(logits, tokens, strict=True):
        shifted = window_logits[:-1].astype(np.float64)
        peak = shifted.max(-1, keepdims=True)
        log_norm = np.log(np.exp(shifted - peak).sum(-1)) + peak[:, 0]
        nll.append(log_norm - shifted[np.arange(len(window) - 1), window[1:]])
    return float(np.exp(np.concatenate(nll).mean()))


def logit_agreement(reference: np.ndarray, other: np.ndarray, tokens: np.ndarray) -> dict:
    """How far ``other``'s logits are from ``reference``'s on the same ``tokens``.

    Returns:
      ``max_abs_diff``; ``rel_max_diff`` (that over the largest reference logit's magnitude);
      ``top1_agreement`` (the fraction of positions whose most likely next token is the same);
      ``perplexity`` and ``reference_perplexity`` (``next_token_perplexity`` of each).

    Raises:
      ValueError: for logits of different shapes, or non-finite logits (named).
    """
    if reference.shape != other.shape:
        raise ValueError(f"logits of different shapes: {reference.shape} and {other.shape}")
    for name, logits in (("reference", reference), ("other", other)):
        if not np.isfinite(logits).all():
            raise ValueError(f"the {name} logits are not all finite")
    diff = float(np.abs(other - reference).max())
    return {"max_abs_diff": diff, "rel_max_diff": diff / float(np.abs(reference).max()),
            "top1_agreement": float((other.argmax(-1) == reference.argmax(-1)).mean()),
            "perplexity": next_token_perplexity(other, tokens),
            "reference_perplexity": next_token_perplexity(reference, tokens)}


def exports_read_back(pruned, quantized, tokens: np.ndarray, directory: str, *,
                      gguf_types=("F16",), sparsity: str = "", quant_label: str = "") -> list:
    """Writes each export of a pruned model into ``directory`` and reads it back with
    transformers: one row of ``logit_agreement`` figures per export.

    Each GGUF type holds the pruned float model, so its own rounding is the expected error; its
    row adds ``jaxprune_rel_max_diff``, transformers against jaxprune's reading of the same file
    (the readers' agreement, apart from the format). The compressed-tensors checkpoint holds the
    quantized model, whose grid it stores exactly: only float arithmetic differs.

    Args:
      pruned: the pruned float model (a ``Llama``).
      quantized: ``oneshot.quantize_model``'s result on it (``.model`` and ``.quantized``), or
        ``None`` for GGUF only.
      tokens: ``[batch, length]`` token ids the logits are compared on.
      directory: an empty folder the files are written into (they stay there).
      gguf_types: ``gguf_export.TENSOR_TYPES`` to write.
      sparsity: the pattern recorded in the compressed-tensors config (``"2:4"``), or empty.
      quant_label: the quantizer's label for the compressed-tensors row.

    Returns:
      A list of dicts: ``export`` (its label), ``file MB`` and ``logit_agreement``'s figures.

    Raises:
      ValueError: for a GGUF type jaxprune does not write (before any file is written).
    """
    check_gguf_types(gguf_types)
    reference = jaxprune_logits(pruned, tokens)
    rows = []
    for tensor_type in gguf_types:
        path = os.path.join(directory, f"model-{tensor_type}.gguf")
        gguf_export.save_gguf(pruned, path, tensor_type=tensor_type)
        theirs = transformers_logits(directory, tokens, gguf_file=os.path.basename(path))
        ours = jaxprune_logits(gguf_io.load_gguf(path)[0], tokens)
        rows.append(_export_row(f"GGUF {tensor_type}", path, reference, theirs, tokens))
        rows[-1]["jaxprune_rel_max_diff"] = logit_agreement(ours, theirs, tokens)["rel_max_diff"]
        logging.info("%s read back: %s", rows[-1]["export"], rows[-1])
    if quantized is not None:
        path = os.path.join(directory, "compressed")
        compressed_export.save_compressed_tensors(quantized.model, path, quantized.quantized,
                                                  sparsity=sparsity)
        rows.append(_export_row(f"compressed-tensors {quant_label}".rstrip(), path,
                                jaxprune_logits(quantized.model, tokens),
                                transformers_logits(path, tokens), tokens))
    return rows


def check_gguf_types(gguf_types, field: str = "gguf_types") -> None:
    """Refuses GGUF types jaxprune does not write.

    Raises:
      ValueError: naming ``field``, the unknown types and the allowed ones.
    """
    unknown = [t for t in gguf_types if t not in gguf_export.TENSOR_TYPES]
    if unknown:
        raise ValueError(f"{field} has {unknown}; allowed: {gguf_export.TENSOR_TYPES}")


def _export_row(label: str, path: str, reference, theirs, tokens) -> dict:
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
    return {"export": label, "file MB": sum(map(os.path.getsize, files)) / 1e6,
            **logit_agreement(reference, theirs, tokens)}
