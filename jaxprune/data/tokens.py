"""Tokenize once: token arrays cached on disk, keyed by the text and the tokenizer."""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np

from jaxprune.models.tokenizer import Tokenizer
from jaxprune.workdir import write_atomic


def default_cache_dir() -> str:
    """``$JAXPRUNE_CACHE_DIR/tokens``, or ``~/.cache/jaxprune/tokens``."""
    root = os.environ.get("JAXPRUNE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxprune")
    return os.path.join(root, "tokens")


def tokenize_cached(text: str, tokenizer: Tokenizer, *, cache_dir: str | None = None,
                    use_cache: bool = True) -> np.ndarray:
    """Token ids of ``text`` (no BOS), read from or written to a cache.

    The key is the SHA-256 of the text and of the tokenizer's full definition, so a changed
    text or tokenizer never reads a stale file. The file is written atomically.

    Args:
      text: the text.
      tokenizer: the tokenizer.
      cache_dir: cache directory; ``default_cache_dir()`` when ``None``.
      use_cache: set to false to always tokenize.

    Returns:
      int32 token ids.
    """
    if not use_cache:
        return tokenizer.encode(text)
    key = hashlib.sha256(text.encode()).hexdigest()[:24] + "-" + tokenizer.fingerprint()[:24]
    directory = cache_dir or default_cache_dir()
    path = os.path.join(directory, key + ".npy")
    if os.path.isfile(path):
        return np.load(path)
    ids = tokenizer.encode(text)
    buffer = io.BytesIO()
    np.save(buffer, ids)
    write_atomic(path, buffer.getvalue())  # a shared cache: the umask's mode, never half a file
    return ids
