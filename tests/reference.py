"""Independent float64 NumPy references for the selection rules, written from their definitions.

None of this calls jaxprune: it is what the tests compare the library against.
"""

import numpy as np


def canonical(scores) -> np.ndarray:
    """Float64 copy with -0.0 folded into 0.0 (equal scores tie)."""
    x = np.asarray(scores, dtype=np.float32).astype(np.float64)
    return np.where(x == 0, 0.0, x)


def keep_lowest_pruned(values: np.ndarray, prune_count: int) -> np.ndarray:
    """1-D: prunes the prune_count lowest values, earlier index first among ties."""
    keep = np.ones(values.shape, bool)
    order = sorted(range(values.size), key=lambda i: (values[i], i))
    keep[order[:prune_count]] = False
    return keep


def per_tensor(scores, prune_count: int) -> np.ndarray:
    x = canonical(scores)
    return keep_lowest_pruned(x.ravel(), prune_count).reshape(x.shape)


def per_output(scores, prune_count: int) -> np.ndarray:
    x = canonical(scores)
    columns = x.reshape(-1, x.shape[-1])
    keep = np.stack(
        [keep_lowest_pruned(columns[:, j], prune_count) for j in range(columns.shape[1])], axis=1
    )
    return keep.reshape(x.shape)


def n_of_m(scores, n: int, m: int) -> np.ndarray:
    x = canonical(scores)
    keep = np.ones(x.shape, bool)
    flat_rest = x.reshape(x.shape[0], -1)
    keep_rest = keep.reshape(x.shape[0], -1)
    for start in range(0, x.shape[0], m):
        for j in range(flat_rest.shape[1]):
            keep_rest[start:start + m, j] = keep_lowest_pruned(flat_rest[start:start + m, j], m - n)
    return keep_rest.reshape(x.shape)


def global_(score_list, prune_count: int) -> list[np.ndarray]:
    """Concatenates the flattened scores in order and prunes the lowest, stable by position."""
    flat = np.concatenate([canonical(s).ravel() for s in score_list])
    keep = keep_lowest_pruned(flat, prune_count)
    out, start = [], 0
    for s in score_list:
        size = int(np.prod(np.shape(s)))
        out.append(keep[start:start + size].reshape(np.shape(s)))
        start += size
    return out
