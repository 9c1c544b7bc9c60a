"""A roofline model of the 2:4 kernels: what ratio to dense ``jnp.dot`` the design can reach.

For ``y [M, N] = x [M, K] @ W.T`` in 16-bit floats, dense reads the weight (2 N K bytes), reads
``x`` and writes ``y``; the 2:4 kernels read 9/16 of the weight bytes (values N K + metadata
N K / 8), the same ``x`` and ``y``, run the same tensor-core product on the decompressed tile
(padded to at least 16 rows), and pay ALU work to decompress: ``DECOMPRESS_OPS`` integer or
select operations per weight entry (counted from ``format.expand_groups``: per entry two
compares, two selects and an add; per group of four a shift and a mask; per 16-bit word four
shifts and four masks), once per row block of the grid.

Two bounds per case:

* ``overlapped``: memory, tensor cores and ALUs all busy at once, time = the slowest of the
  three (the roofline, what a perfectly pipelined kernel reaches);
* ``serial``: decompression not hidden behind memory, time = memory + ALU + tensor time.

A measured ratio between the two says how well the pipeline hides decompression.
"""

from __future__ import annotations

import dataclasses
import math

DECOMPRESS_OPS = 6.0
MIN_ROWS = 16  # a Triton dot needs 16 rows: fewer are computed as 16


@dataclasses.dataclass(frozen=True)
class Device:
    """What the model needs of a GPU (datasheet figures; the benchmark measures the first two).

    Attributes:
      name: as ``jax.devices()[0].device_kind`` reports it.
      bandwidth: memory bytes per second.
      tensor_flops: dense 16-bit tensor-core FLOP per second.
      alu_ops: 32-bit integer operations per second (SMs x INT32 lanes x boost clock).
    """

    name: str
    bandwidth: float
    tensor_flops: float
    alu_ops: float


# Public datasheet figures (SXM parts). INT32 lanes: 64 per SM on Ampere and Hopper.
DEVICES = {
    "H200": Device("NVIDIA H200", 4.8e12, 989e12, 132 * 64 * 1.98e9),
    "H100": Device("NVIDIA H100 80GB HBM3", 3.35e12, 989e12, 132 * 64 * 1.98e9),
    "A100": Device("NVIDIA A100-SXM4-80GB", 2.039e12, 312e12, 108 * 64 * 1.41e9),
}


def device_for(kind: str, *, bandwidth: float | None = None,
               tensor_flops: float | None = None) -> Device:
    """The model's device for a ``device_kind`` string (H200 when unknown), with measured
    bandwidth and tensor FLOP/s replacing the datasheet's when given."""
    base = next((d for key, d in DEVICES.items() if key in kind.upper()), DEVICES["H200"])
    return dataclasses.replace(base, bandwidth=bandwidth or base.bandwidth,
                               tensor_flops=tensor_flops or base.tensor_flops)


def dense_seconds(n: int, k: int, m: int, device: Device, itemsize: int = 2) -> float:
    """Roofline time of the dense product: memory or tensor cores, whichever is slower."""
    moved = itemsize * (n * k + m * k + m * n)
    return max(moved / device.bandwidth, 2 * m * n * k / device.tensor_flops)


def sparse_seconds(n: int, k: int, m: int, device: Device, *, block_m: int | None = None,
                   itemsize: int = 2) -> dict[str, float]:
    """Model times of a 2:4 kernel: ``{"overlapped": ..., "serial": ...}`` (module docstring).

    Args:
      n, k, m: the product's sizes.
      device: the GPU.
      block_m: rows per program; the weight is read and decompressed once per row block
        (default: all rows in one block, as decode and the 128-row tile do).
      itemsize: bytes per value (2 for bf16 and fp16).
    """
    rows = max(m, MIN_ROWS)
    row_blocks = 1 if block_m is None else math.ceil(m / block_m)
    weight = row_blocks * (n * k * itemsize // 2 + n * k // 8)
    memory = (weight + itemsize * (m * k + m * n)) / device.bandwidth
    alu = row_blocks * DECOMPRESS_OPS * n * k / device.alu_ops
    tensor = 2 * rows * n * k / device.tensor_flops
    return {"overlapped": max(memory, alu, tensor), "serial": memory + alu + tensor}


def predicted_ratios(n: int, k: int, m: int, device: Device, *,
                     block_m: int | None = None) -> dict[str, float]:
    """Dense time over the 2:4 kernel's model time: ``{"overlapped", "serial"}`` (higher is
    better; 16/9 = 1.78 is the ceiling when both are bound by reading the weight)."""
    dense = dense_seconds(n, k, m, device)
    return {bound: dense / t for bound, t in sparse_seconds(n, k, m, device,
                                                             block_m=block_m).items()}


def fallback_seconds(n: int, k: int, m: int, device: Device, itemsize: int = 2) -> float:
    """Model time of the dense fallback: decompress the weight to memory (read 9/16 of its
    bytes, write it whole), then the dense product. A model that keeps its decompressed
    weights for a whole forward pass pays only the product (ratio 1)."""
    decompress = (n * k * itemsize // 2 + n * k // 8 + itemsize * n * k) / device.bandwidth
    return decompress + dense_seconds(n, k, m, device, itemsize)
