"""How an independent reader sees an exported model: transformers' logits for a GGUF file or a
compressed-tensors directory, set against the logits jaxprune computes for the same tokens.

transformers (with torch, and the ``gguf`` or ``compressed-tensors`` package for the format)
is imported only when called: it is an optional dependency (extra ``reference``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["jaxprune_logits", "logit_agreement", "next_token_perplexity",
           "transformers_logits"]


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
