"""Calibration batches: N segments of L tokens from a token stream."""

from __future__ import annotations

import numpy as np


def calibration_segments(tokens: np.ndarray, num_segments: int, length: int, *,
                         seed: int = 0, contiguous: bool = False,
                         bos_id: int | None = None) -> np.ndarray:
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
      bos_id: start every segment with this token, followed by ``length - 1`` tokens of the
        stream (for models that always see a BOS first, like Gemma).

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
    text = length - (bos_id is not None)
    needed = num_segments * text if contiguous else text
    if tokens.size < needed or text < 1:
        raise ValueError(
            f"calibration text has {tokens.size} tokens; {num_segments} "
            f"{'contiguous ' if contiguous else ''}segments of {length}"
            f"{' (a BOS and ' + str(text) + ' text tokens)' if bos_id is not None else ''} "
            f"need {max(needed, 1)}"
        )
    if contiguous:
        segments = tokens[: num_segments * text].reshape(num_segments, text).astype(np.int32)
    else:
        starts = np.random.default_rng(seed).integers(0, tokens.size - text + 1, num_segments)
        segments = np.stack([tokens[s:s + text] for s in starts]).astype(np.int32)
    if bos_id is None:
        return segments
    return np.concatenate([np.full((num_segments, 1), bos_id, np.int32), segments], axis=1)
