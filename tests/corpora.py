"""Test texts that stress a tokenizer: words of several scripts mixed with whitespace runs,
digits and special-token spellings, in a seeded random order."""

import numpy as np


def mixed_documents(scripts: str, pieces: list[str], *, seed: int, count: int, words: int,
                    extras: int) -> list[str]:
    """``count`` documents, each ``words`` random runs of 1-5 characters of ``scripts`` and
    ``extras`` random ``pieces``, shuffled and joined by spaces."""
    rng = np.random.default_rng(seed)
    documents = []
    for _ in range(count):
        chosen = [scripts[i:i + int(rng.integers(1, 6))]
                  for i in rng.integers(0, len(scripts) - 6, words)]
        chosen += [pieces[i] for i in rng.integers(0, len(pieces), extras)]
        rng.shuffle(chosen)
        documents.append(" ".join(chosen))
    return documents
