r"""Times 2:4 sparse matmul against dense on a GPU: the Pallas kernels, the reference, torch.

  python -m experiments.bench_sparse_matmul --out=runs/bench_sparse_matmul.json
Smoke run (any machine; tiny shapes, kernels through the Pallas interpreter):
  python -m experiments.bench_sparse_matmul --smoke --out=/tmp/bench.json

On a GPU it prints the versions and the device, measures the copy bandwidth and the bf16
matmul rate, then for (N, K) in (4096, 4096), (11008, 4096), (4096, 11008) and M in 1, 16, 128,
2048 times y = x @ W.T (bf16, float32 accumulation) by:
dense ``jnp.dot``; the reference (decompress then dot); the split-K kernel (M <= 32); the
tiled kernel (M <= 1024); the dispatcher ("auto"); and torch's ``to_sparse_semi_structured``
when torch with CUDA is present (its error is recorded when it fails).

Timing: each measured call runs the product over ``--copies`` different weight copies (8 by
default; 8 x 4096 x 4096 bf16 is 256 MiB, far above the H200's 50 MiB L2) inside one jitted
function, so the device runs them back to back and launch overhead is amortised; the time per
product is the call's wall time over the copies, after block_until_ready; the figure is the
median of ``--repeats`` calls after one warm-up. The output: a markdown table (microseconds,
weight GB/s, TFLOP/s, speedup over dense) and a JSON file.
"""

from __future__ import annotations

import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import common
from jaxprune import kernels

_OUT = flags.DEFINE_string("out", None, "JSON output path (the .md table is written beside).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny shapes through the Pallas interpreter.")
_COPIES = flags.DEFINE_integer("copies", 8, "Weight copies rotated in one timed call.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed calls per entry (the median is kept).")

SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008))
ROWS = (1, 16, 128, 2048)
SMOKE_SHAPES = ((48, 64), (40, 128))
SMOKE_ROWS = (1, 16, 64)


def median_seconds(fn, *args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` after one warm-up call, synchronised each time."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_2_4_weights(key, n: int, k: int, copies: int):
    """``copies`` random bf16 weights [N, K], each 2:4 along K, made on the device."""
    def one(key):
        values_key, keep_key = jax.random.split(key)
        w = jax.random.normal(values_key, (n, k // 4, 4), jnp.bfloat16)
        ranks = jnp.argsort(jax.random.uniform(keep_key, (n, k // 4, 4)), axis=-1)
        return jnp.where(ranks < 2, w, 0).reshape(n, k)
    return [jax.jit(one)(k_) for k_ in jax.random.split(key, copies)]


def device_rates(smoke: bool) -> dict:
    """Copy bandwidth (read + write bytes per second) and bf16 matmul FLOP/s."""
    size = (1 << 16) if smoke else (1 << 28)
    x = jnp.ones((size,), jnp.bfloat16)
    copy = median_seconds(jax.jit(lambda a: a + 1), x, repeats=5)
    d = 256 if smoke else 8192
    a = jnp.ones((d, d), jnp.bfloat16)
    mm = median_seconds(jax.jit(lambda p, q: jnp.dot(p, q, preferred_element_type=jnp.float32)
                                ), a, a, repeats=5)
    return {"copy_gb_per_s": 2 * x.nbytes / copy / 1e9,
            "bf16_matmul_tflops": 2 * d ** 3 / mm / 1e12}


def product_over_copies(method: str, interpret: bool):
    """A jitted function applying one method to every weight copy: returns all outputs."""
    if method == "dense":
        return jax.jit(lambda x, ws: [jnp.dot(x, w.T, preferred_element_type=jnp.float32
                                              ).astype(x.dtype) for w in ws])
    return jax.jit(lambda x, ss: [kernels.sparse24_matmul(x, s, method=method,
                                                          interpret=interpret) for s in ss])


def torch_semi_structured(n: int, k: int, m: int, repeats: int) -> dict:
    """Times ``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt/CUTLASS) for W @ x.T."""
    try:
        import torch
    except ImportError:
        return {"error": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"error": "torch has no CUDA device"}
    try:
        from torch.sparse import to_sparse_semi_structured

        mask = torch.tensor([0, 0, 1, 1], dtype=torch.bool, device="cuda").tile(n, k // 4)
        weight = torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * mask
        sparse = to_sparse_semi_structured(weight)
        x = torch.randn(max(m, 16), k, dtype=torch.bfloat16, device="cuda")  # 16-row minimum
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def median_cuda_seconds(lhs):
            torch.mm(lhs, x.t())  # warm-up
            times = []
            for _ in range(repeats):
                start.record()
                torch.mm(lhs, x.t())
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            return statistics.median(times)

        return {"seconds": median_cuda_seconds(sparse),
                "dense_seconds": median_cuda_seconds(weight), "torch": torch.__version__}
    except Exception as err:  # noqa: BLE001  (the benchmark records any failure of torch's path)
        return {"error": f"{type(err).__name__}: {err}"[:300]}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _OUT.value:
        raise app.UsageError("--out is required")
    if _COPIES.value < 1 or _REPEATS.value < 1:
        raise app.UsageError("--copies and --repeats must be >= 1")
    smoke = _SMOKE.value
    on_gpu = jax.default_backend() == "gpu"
    if not (on_gpu or smoke):
        raise app.UsageError(f"no GPU (JAX backend {jax.default_backend()!r}); the kernels need "
                             "one to be timed. --smoke runs tiny shapes through the interpreter.")
    interpret = not on_gpu
    device = jax.devices()[0]
    header = {"jax": jax.__version__, "jaxlib": common.package_versions(["jaxlib"])["jaxlib"],
              "device": device.device_kind, "backend": jax.default_backend(),
              "platform": platform.platform(), "interpret": interpret,
              "copies": _COPIES.value, "repeats": _REPEATS.value}
    header.update(device_rates(smoke))
    print(json.dumps(header, indent=2))

    rows = []
    key = jax.random.PRNGKey(0)
    for n, k in SMOKE_SHAPES if smoke else SHAPES:
        weights = random_2_4_weights(key, n, k, _COPIES.value)
        compressed = [kernels.compress(w) for w in weights]
        for m in SMOKE_ROWS if smoke else ROWS:
            x = jax.random.normal(jax.random.PRNGKey(m), (m, k), jnp.bfloat16)
            methods = ["dense", "reference", "auto"]
            methods += ["splitk"] if m <= kernels.matmul.SPLITK_MAX_ROWS else []
            methods += ["tiled"] if m <= kernels.matmul.TILED_MAX_ROWS else []
            timings = {}
            for method in methods:
                operands = weights if method == "dense" else compressed
                try:
                    seconds = median_seconds(product_over_copies(method, interpret), x, operands,
                                             repeats=_REPEATS.value) / len(operands)
                    timings[method] = {"seconds": seconds}
                except Exception as err:  # noqa: BLE001  (a failing kernel is a result too)
                    timings[method] = {"error": f"{type(err).__name__}: {err}"[:300]}
            if on_gpu:
                timings["torch_semi_structured"] = torch_semi_structured(n, k, m, _REPEATS.value)
            dense = timings["dense"].get("seconds")
            for method, timing in timings.items():
                row = {"N": n, "K": k, "M": m, "method": method, **timing}
                if "seconds" in timing:
                    s = timing["seconds"]
                    weight_bytes = (n * k * 2 if method == "dense" else n * k * 9 // 8)
                    row.update({"us": s * 1e6, "weight_gb_per_s": weight_bytes / s / 1e9,
                                "tflops": 2 * m * n * k / s / 1e12,
                                "speedup_vs_dense": dense / s if dense else None})
                rows.append(row)
                print(f"N={n} K={k} M={m} {method}: "
                      + (f"{row['us']:.1f} us, x{row['speedup_vs_dense']:.2f}"
                         if "us" in row else row.get("error", "")))

    lines = ["| N | K | M | method | us | weight GB/s | TFLOP/s | speedup vs dense |",
             "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "us" in r:
            lines.append(f"| {r['N']} | {r['K']} | {r['M']} | {r['method']} | {r['us']:.1f} | "
                         f"{r['weight_gb_per_s']:.0f} | {r['tflops']:.2f} | "
                         f"{r['speedup_vs_dense']:.2f} |")
        else:
            lines.append(f"| {r['N']} | {r['K']} | {r['M']} | {r['method']} | failed: "
                         f"{r.get('error', '')[:80]} | | | |")
    table = "\n".join(lines)
    print(table)
    common.write_json_atomic(_OUT.value, {"header": header, "rows": rows})
    common.write_text_atomic(_OUT.value.rsplit(".", 1)[0] + ".md", table + "\n")
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    common.run_main(main)
