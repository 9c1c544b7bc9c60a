"""Calibration batches: N segments of L tokens from a token stream."""

from __future__ import annotations

import numpy as np


def calibration_segments(tokens: np.ndarray, num_segments: int, length: int, *,
                         seed: int = 0, contiguous: bool = False) -> np.ndarray:
    """Draws ``num_segments`` segments of ``length`` tokens.

    Args:
      tokens: a 1-D token stream.
      num_segments: N, >= 1.
      length: L, >= 1.
      seed: seeds the random offsets (``numpy.random.default_rng``).
      contiguous: if true, segment i is ``tokens[i * L:(i + 1) * L]`` (the protocol of the
        issues: consecutive segments from the start); otherwise each segment starts at an
        independent uniform offset in ``[0, len(tokens) - L]``, as the reference repositories
        sample C4.

    Returns:
      int32 array ``[num_segments, length]``.

    Raises:
      ValueError: for non-positive sizes or a stream too short for the request.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    for name, value in (("num_segments", num_segments), ("length", length)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    needed = num_segments * length if contiguous else length
    if tokens.size < needed:
        raise ValueError(
            f"calibration text has {tokens.size} tokens; {num_segments} "
            f"{'contiguous ' if contiguous else ''}segments of {length} need {needed}"
        )
    if contiguous:
        return tokens[: num_segments * length].reshape(num_segments, length).astype(np.int32)
    starts = np.random.default_rng(seed).integers(0, tokens.size - length + 1, num_segments)
    return np.stack([tokens[s:s + length] for s in starts]).astype(np.int32)
