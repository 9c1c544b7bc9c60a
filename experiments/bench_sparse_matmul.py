r"""Times 2:4 sparse matmul against dense on a GPU: the Pallas kernels, the reference, torch.

  python -m experiments.bench_sparse_matmul --out=runs/bench_sparse_matmul.json
  python -m experiments.bench_sparse_matmul --shapes=4096x14336 --rows=1,16 \
      --methods=dense,decode,torch --out=runs/decode.json       # a subset, for a short slot
  python -m experiments.bench_sparse_matmul --tune --out=runs/tune.json   # writes the table
Smoke run (any machine; tiny shapes, kernels through the Pallas interpreter, every code path):
  python -m experiments.bench_sparse_matmul --smoke --tune --out=/tmp/bench.json

Runs on a machine that has only jax (with CUDA), flax and numpy (torch for the torch rows):
it imports nothing else, and uses argparse rather than absl or ml_collections.

For every (N, K) in ``--shapes``, M in ``--rows`` and method in ``--methods``:

1. ``--check`` (on by default): the method's output on the first weight copy is compared with
   the dense product; a mismatch fails that row, and the run goes on.
2. Timing on the device: one jitted program runs the product ``--iters`` times back to back,
   unrolled, rotating over enough weight copies to overflow the L2 cache (``--l2_mb``); the
   time per product is the program's wall time over ``--iters`` (launch overhead amortised),
   the median of ``--repeats`` programs after a warm-up.
3. Per row: microseconds, ratio to dense ``jnp.dot`` (torch rows: to torch's own dense
   ``mm``), bytes moved per second against the measured copy bandwidth, and percent of the
   roofline of ``jaxprune.kernels.roofline`` (its time over the measured one).

``--tune`` times a grid of launch settings for the kernels instead and writes the fastest that
passes the check per (method, N, K, M bucket) to ``--tune_out`` (by default the table that
``jaxprune.kernels.tuning`` reads; in smoke mode a file beside ``--out``).
Writes JSON (``--out``) and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import kernels
from jaxprune.kernels import roofline, tuning
from jaxprune.workdir import write_atomic

SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (4096, 14336))
ROWS = (1, 16, 128, 2048)
METHODS = ("dense", "reference", "decode", "splitk", "tiled", "auto", "torch")
KERNEL_METHODS = ("decode", "splitk", "tiled")
# Ragged N (40 outputs, blocks of 16+), ragged K (128 inputs, blocks of 256) and masked rows.
SMOKE_SHAPES = ((40, 128),)
SMOKE_ROWS = (20,)  # gpu_check.sh's ragged step covers M=3, in the row bucket of M=1
TUNE_GRID = {
    "decode": {"block_n": (16, 32, 64), "block_k": (256, 512), "num_warps": (4, 8),
               "num_stages": (3, 4)},
    "splitk": {"block_n": (32, 64), "block_k": (256,), "splits": (2, 4, 8), "num_warps": (4,),
               "num_stages": (3,)},
    "tiled": {"block_m": (64, 128), "block_n": (64, 128), "block_k": (64, 128),
              "num_warps": (4, 8), "num_stages": (3,)},
}
CHECK_TOLERANCE = 2.0**-6  # max |error| / max |dense|: one bf16 rounding of the output


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", required=True, help="JSON output (the .md table goes beside)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, interpreter")
    parser.add_argument("--shapes", default="", help="NxK,... (default: the LLaMA shapes)")
    parser.add_argument("--rows", default="", help="M,... (default: 1,16,128,2048)")
    parser.add_argument("--methods", default=",".join(METHODS), help="subset of " + str(METHODS))
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--tune", action="store_true", help="time the launch-settings grid")
    parser.add_argument("--tune_out", default="", help="table written by --tune")
    parser.add_argument("--iters", type=int, default=None,
                        help="products per timed program (default 32; 2 with --smoke)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed programs per entry (default 7; 1 with --smoke)")
    parser.add_argument("--l2_mb", type=float, default=50.0, help="L2 size the copies overflow")
    args = parser.parse_args(argv)
    args.iters = args.iters or (2 if args.smoke else 32)
    args.repeats = args.repeats or (1 if args.smoke else 7)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or args.iters < 1 or args.repeats < 1:
        parser.error(f"--methods must be among {METHODS} (unknown: {unknown}); --iters and "
                     f"--repeats must be >= 1")
    try:
        args.shapes = ([tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
                       if args.shapes else list(SMOKE_SHAPES if args.smoke else SHAPES))
        args.rows = ([int(v) for v in args.rows.split(",")] if args.rows
                     else list(SMOKE_ROWS if args.smoke else ROWS))
    except ValueError:
        parser.error(f"--shapes takes NxK,... and --rows M,...; got {args.shapes!r}, "
                     f"{args.rows!r}")
    bad = [(n, k) for n, k in args.shapes if k % 64 or n < 1]
    if bad or any(m < 1 for m in args.rows):
        parser.error(f"every K must be a multiple of 64 and N, M >= 1; got shapes {bad}, "
                     f"rows {args.rows}")
    return args


def applicable(method: str, m: int) -> bool:
    """Whether ``method`` takes M rows (decode and split-K at most 32, tiled at most 1024)."""
    if method in ("decode", "splitk"):
        return m <= kernels.matmul.DECODE_MAX_ROWS
    if method == "tiled":
        return m <= kernels.matmul.TILED_MAX_ROWS
    return True


def random_2_4_weights(key, n: int, k: int, copies: int) -> list:
    """``copies`` random bf16 weights [N, K], each 2:4 along K, made on the device."""
    def one(key):
        values_key, keep_key = jax.random.split(key)
        w = jax.random.normal(values_key, (n, k // 4, 4), jnp.bfloat16)
        ranks = jnp.argsort(jax.random.uniform(keep_key, (n, k // 4, 4)), axis=-1)
        return jnp.where(ranks < 2, w, 0).reshape(n, k)
    return [jax.jit(one)(k_) for k_ in jax.random.split(key, copies)]


def product_fn(method: str, launch: dict | None, interpret: bool):
    """``(x, operand) -> y`` for one method; ``launch`` overrides a kernel's settings."""
    if method == "dense":
        return lambda x, w: jnp.dot(x, w.T, preferred_element_type=jnp.float32).astype(x.dtype)
    if method in KERNEL_METHODS and launch is not None:
        kernel = kernels.matmul.KERNELS[method]
        return lambda x, s: kernel(x, s, interpret=interpret, **launch)
    return lambda x, s: kernels.sparse24_matmul(x, s, method=method, interpret=interpret)


def timed_program(fn, iters: int):
    """One jitted program running ``fn`` ``iters`` times, rotating over the operand copies;
    every output is returned, so none of the products can be skipped."""
    def program(x, operands):
        return tuple(fn(x, operands[i % len(operands)]) for i in range(iters))
    return jax.jit(program)


def seconds_per_product(program, x, operands, iters: int, repeats: int) -> float:
    """Median over ``repeats`` runs of the program's wall time over ``iters``."""
    jax.block_until_ready(program(x, operands))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(program(x, operands))
        times.append((time.perf_counter() - start) / iters)
    return statistics.median(times)


def check_output(out, expected) -> tuple[bool, float]:
    """Whether ``out`` matches the dense product: ``(ok, max |error| / max |dense|)``."""
    out, expected = np.asarray(out, np.float32), np.asarray(expected, np.float32)
    if out.shape != expected.shape or not np.all(np.isfinite(out)):
        return False, math.inf
    error = float(np.max(np.abs(out - expected)) / max(np.max(np.abs(expected)), 1e-30))
    return error <= CHECK_TOLERANCE, error


def copies_for(n: int, k: int, l2_mb: float) -> int:
    """Weight copies whose compressed bytes together exceed twice the L2 cache (2 to 16)."""
    compressed = n * k * 9 // 8
    return int(min(16, max(2, math.ceil(2 * l2_mb * 2**20 / compressed))))


def derived(row: dict, dense_seconds: float | None, device: roofline.Device,
            copy_bandwidth: float) -> dict:
    """Ratio to dense, achieved bandwidth and percent of the roofline of a timed row."""
    n, k, m, s = row["N"], row["K"], row["M"], row["seconds"]
    sparse = row["method"] not in ("dense", "torch_dense")
    weight = n * k * 9 // 8 if sparse else 2 * n * k
    moved = weight + 2 * (m * k + m * n)
    if row["method"] in ("dense", "torch_dense"):
        model = roofline.dense_seconds(n, k, m, device)
    elif row["method"] == "reference" or (row["method"] == "auto" and m > 1024):
        model = roofline.fallback_seconds(n, k, m, device)
    else:
        model = roofline.sparse_seconds(n, k, m, device)["overlapped"]
    return {"us": s * 1e6, "ratio": dense_seconds / s if dense_seconds else None,
            "gb_per_s": moved / s / 1e9, "bandwidth_pct": 100 * moved / s / copy_bandwidth,
            "roofline_pct": 100 * model / s}


def measure_method(method: str, x, dense_weights, compressed, args, interpret: bool,
                   launch: dict | None = None) -> dict:
    """Checks (``args.check``) then times one method; failures become the row's ``error``."""
    operands = dense_weights if method == "dense" else compressed
    fn = product_fn(method, launch, interpret)
    try:
        if args.check:
            expected = product_fn("dense", None, interpret)(x, dense_weights[0])
            ok, error = check_output(jax.jit(fn)(x, operands[0]), expected)
            if not ok:
                return {"error": f"check failed: relative error {error:.3g} > "
                                 f"{CHECK_TOLERANCE:.3g}", "check_error": error}
        seconds = seconds_per_product(timed_program(fn, args.iters), x, operands, args.iters,
                                      args.repeats)
        return {"seconds": seconds, **({"check_error": error} if args.check else {})}
    except Exception as err:  # noqa: BLE001  (a kernel that fails is a result, not a crash)
        return {"error": f"{type(err).__name__}: {err}"[:300]}


def torch_rows(n: int, k: int, m: int, args) -> list[dict]:
    """torch ``mm`` dense and ``to_sparse_semi_structured`` (cuSPARSELt or CUTLASS) on the
    same shapes, timed with CUDA events over ``args.iters`` products rotating weight copies;
    the sparse row's ratio is to torch's own dense time."""
    base = {"N": n, "K": k, "M": m}
    try:
        import torch
        from torch.sparse import to_sparse_semi_structured
    except ImportError as err:
        return [{**base, "method": "torch", "error": f"torch is not installed ({err})"}]
    if not torch.cuda.is_available():
        return [{**base, "method": "torch", "error": "torch has no CUDA device"}]
    try:
        copies = copies_for(n, k, args.l2_mb)
        mask = torch.tensor([0, 0, 1, 1], dtype=torch.bool, device="cuda").tile(n, k // 4)
        dense = [torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * mask
                 for _ in range(copies)]
        sparse = [to_sparse_semi_structured(w) for w in dense]
        x = torch.randn(max(m, 16), k, dtype=torch.bfloat16, device="cuda")  # 16-row minimum
        if args.check:
            error = (torch.mm(sparse[0], x.t()) - torch.mm(dense[0], x.t())).abs().max()
            if float(error / torch.mm(dense[0], x.t()).abs().max()) > CHECK_TOLERANCE:
                return [{**base, "method": "torch_semi_structured",
                         "error": f"check failed: {float(error):.3g}"}]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def seconds(weights):
            for w in weights:
                torch.mm(w, x.t())  # warm-up
            times = []
            for _ in range(args.repeats):
                start.record()
                for i in range(args.iters):
                    torch.mm(weights[i % copies], x.t())
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3 / args.iters)
            return statistics.median(times)

        return [{**base, "method": "torch_dense", "seconds": seconds(dense)},
                {**base, "method": "torch_semi_structured", "seconds": seconds(sparse)}]
    except Exception as err:  # noqa: BLE001  (torch's path may be missing for a GPU or shape)
        return [{**base, "method": "torch_semi_structured",
                 "error": f"{type(err).__name__}: {err}"[:300]}]


def device_header(smoke: bool, interpret: bool) -> dict:
    """Versions, device, and the measured copy bandwidth and bf16 matmul rate."""
    size, d = ((1 << 16), 256) if smoke else ((1 << 28), 8192)
    x = jnp.ones((size,), jnp.bfloat16)
    copy = seconds_per_product(timed_program(lambda a, _: a + 1, 8), x, [0], 8, 5)
    a = jnp.ones((d, d), jnp.bfloat16)
    mm = seconds_per_product(timed_program(
        lambda p, _: jnp.dot(p, p, preferred_element_type=jnp.float32), 8), a, [0], 8, 5)
    return {"jax": jax.__version__, "device": jax.devices()[0].device_kind,
            "backend": jax.default_backend(), "platform": platform.platform(),
            "interpret": interpret, "copy_bytes_per_s": 2 * x.nbytes / copy,
            "bf16_matmul_flops": 2 * d ** 3 / mm}


def benchmark_shape(n: int, k: int, args, interpret: bool, device, copy_bw: float) -> list:
    """Every applicable method at every M for one weight shape."""
    weights = random_2_4_weights(jax.random.PRNGKey(n * 7 + k), n, k,
                                 copies_for(n, k, args.l2_mb))
    compressed = [kernels.compress(w) for w in weights]
    rows = []
    for m in args.rows:
        x = jax.random.normal(jax.random.PRNGKey(m), (m, k), jnp.bfloat16)
        entries = [{"N": n, "K": k, "M": m, "method": method,
                    **measure_method(method, x, weights, compressed, args, interpret)}
                   for method in args.methods if method != "torch" and applicable(method, m)]
        if "torch" in args.methods:
            entries += torch_rows(n, k, m, args)
        dense = {e["method"]: e.get("seconds") for e in entries}
        for entry in entries:
            if "seconds" in entry:
                own_dense = dense.get("torch_dense" if entry["method"].startswith("torch")
                                      else "dense")
                entry.update(derived(entry, own_dense, device, copy_bw))
            print(format_row(entry), flush=True)
        rows += entries
    return rows


def tune_shape(n: int, k: int, args, interpret: bool) -> dict:
    """The fastest checked launch settings per kernel and M bucket for one weight shape."""
    weights = random_2_4_weights(jax.random.PRNGKey(n * 7 + k), n, k,
                                 copies_for(n, k, args.l2_mb))
    compressed = [kernels.compress(w) for w in weights]
    winners = {}
    for m, method in itertools.product(args.rows, KERNEL_METHODS):
        if method not in args.methods or not applicable(method, m):
            continue
        grid = TUNE_GRID[method]
        candidates = [dict(zip(grid, values, strict=True))
                      for values in itertools.product(*grid.values())]
        if args.smoke:
            candidates = candidates[:2]
        x = jax.random.normal(jax.random.PRNGKey(m), (m, k), jnp.bfloat16)
        timed = [(measure_method(method, x, weights, compressed, args, interpret, launch),
                  launch) for launch in candidates
                 if launch.get("block_m", 16) <= max(64, tuning.rows_bucket(m))]
        good = [(r["seconds"], launch) for r, launch in timed if "seconds" in r]
        if good:
            seconds, launch = min(good, key=lambda pair: pair[0])
            winners[tuning.table_key(method, n, k, m)] = launch
            print(f"tuned {tuning.table_key(method, n, k, m)}: {launch}, {seconds * 1e6:.1f} us "
                  f"({len(good)}/{len(timed)} settings ran)", flush=True)
    return winners


def format_row(r: dict) -> str:
    """One markdown line; a failed entry shows its error instead of figures."""
    head = f"| {r['N']} | {r['K']} | {r['M']} | {r['method']} |"
    if "us" not in r:
        return head + f" failed: {r.get('error', 'no time')[:90]} | | | | |"
    ratio = f"{r['ratio']:.2f}" if r.get("ratio") else ""
    return (head + f" {r['us']:.1f} | {ratio} | {r['gb_per_s']:.0f} | "
            f"{r['bandwidth_pct']:.0f}% | {r['roofline_pct']:.0f}% |")


def format_table(rows: list[dict]) -> str:
    lines = ["| N | K | M | method | us | ratio to dense | GB/s | % of copy bandwidth | "
             "% of roofline |", "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    return "\n".join(lines + [format_row(r) for r in rows])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    on_gpu = jax.default_backend() == "gpu"
    if not (on_gpu or args.smoke):
        print(f"no GPU (JAX backend {jax.default_backend()!r}); the kernels need one to be "
              "timed. --smoke runs tiny shapes through the interpreter.", file=sys.stderr)
        return 2
    interpret = not on_gpu
    header = {**device_header(args.smoke, interpret), "iters": args.iters,
              "repeats": args.repeats, "check": args.check}
    print(json.dumps(header, indent=2), flush=True)
    device = roofline.device_for(header["device"], bandwidth=header["copy_bytes_per_s"],
                                 tensor_flops=header["bf16_matmul_flops"])
    if args.tune:
        winners = {}
        for n, k in args.shapes:
            winners.update(tune_shape(n, k, args, interpret))
        tune_out = args.tune_out or (args.out.rsplit(".", 1)[0] + ".tuned.json" if args.smoke
                                     else tuning.TABLE)
        write_atomic(tune_out, json.dumps({"device": header["device"], "jax": header["jax"],
                                           "settings": winners}, indent=2, sort_keys=True))
        print(f"wrote {tune_out}")
    rows = [row for n, k in args.shapes for row in benchmark_shape(
        n, k, args, interpret, device, header["copy_bytes_per_s"])]
    table = format_table(rows)
    print(table)
    write_atomic(args.out, json.dumps({"header": header, "rows": rows}, indent=2, default=str))
    write_atomic(args.out.rsplit(".", 1)[0] + ".md", table + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
