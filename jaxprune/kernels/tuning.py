"""Launch settings of the 2:4 kernels per shape: the defaults, and the winners of a tuning run.

``experiments.bench_sparse_matmul --tune`` times a small grid of block sizes, warps and stages
for every (method, N, K, M) it covers on the GPU it runs on and writes the fastest setting that
passes its numerical check to ``tuned_blocks.json`` beside this file (committed, with the
device it came from). ``settings`` reads that table; shapes it does not hold get ``DEFAULTS``.
M is bucketed to the next power of two (at least 16), the row count the kernels compute.
"""

from __future__ import annotations

import functools
import json
import os

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned_blocks.json")

# First choices, reasoned, not measured (see docs/kernels.md): decode reads each weight once
# with enough programs to fill 100+ SMs; the tiled kernel covers M up to 128 in one row block
# (each weight tile read once) with 8 warps for the 128-row tile.
DEFAULTS = {
    "decode": {"block_n": 32, "block_k": 256, "num_warps": 4, "num_stages": 4},
    "splitk": {"block_n": 64, "block_k": 256, "splits": 4, "num_warps": 4, "num_stages": 3},
    "tiled": {"block_m": 64, "block_n": 64, "block_k": 128, "num_warps": 4, "num_stages": 3},
    "tiled128": {"block_m": 128, "block_n": 64, "block_k": 64, "num_warps": 8,
                 "num_stages": 3},
}


def rows_bucket(m: int) -> int:
    """The row count the kernels compute for M rows: the next power of two, at least 16."""
    return max(16, 1 << max(0, (m - 1).bit_length()))


def table_key(method: str, n: int, k: int, m: int) -> str:
    return f"{method}/{n}x{k}/m{rows_bucket(m)}"


@functools.lru_cache(maxsize=1)
def _tuned(path: str = TABLE) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("settings", {})


def clear_cache() -> None:
    """Forgets the table read so far: the next ``settings`` call reads the file again (after a
    tuning run rewrote it in this process)."""
    _tuned.cache_clear()


def default_settings(method: str, m: int) -> dict:
    """``DEFAULTS`` for ``method``; the tiled kernel takes its 128-row tile for 64 < M <= 128."""
    if method == "tiled" and 64 < rows_bucket(m) <= 128:
        return dict(DEFAULTS["tiled128"])
    return dict(DEFAULTS[method])


def settings(method: str, n: int, k: int, m: int) -> dict:
    """Keyword arguments for kernel ``method`` on ``W [N, K]`` and M rows: the tuned winner
    when the table has one, else ``default_settings``."""
    return dict(_tuned().get(table_key(method, n, k, m), default_settings(method, m)))
