r"""Everything a first GPU run of the 2:4 kernels needs, in one process.

  python -m experiments.gpu_check --out=runs/gpu_check           # on a GPU
  python -m experiments.gpu_check --tune --out=runs/gpu_check    # also tunes the launch settings
  python -m experiments.gpu_check --smoke --tune --out=/tmp/gc   # any machine: tiny, interpreted

The steps: (1) Triton lowering of every kernel variant, (2) numerics on ragged N, K and M against
the dense product, (2b, with ``--tune``) the launch-settings grid, written to
``jaxprune/kernels/tuned_blocks.json`` (beside ``--out`` in smoke mode), (3) the default
benchmark, read with the settings just tuned, (4) greedy decoding tokens/s, 2:4 ``SparseLinear``
against dense. Results in ``--out``: ragged.json, bench.json (and their .md tables),
decode.json; the run fails if any kernel row failed (torch's rows excepted: torch may lack a
CUDA build). One process, so JAX and the device start once and the steps share compiled
programs. Needs only jax, flax and numpy (an image without ml_collections is enough).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

from experiments import bench_decode, bench_sparse_matmul
from jaxprune.kernels import lowering, tuning


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default="runs/gpu_check", help="folder for the results")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, interpreter")
    parser.add_argument("--tune", action="store_true", help="also tune the launch settings")
    return parser.parse_args(argv)


def step_arguments(args: argparse.Namespace) -> dict[str, list[str]]:
    """The command lines of the benchmark steps, by result name."""
    smoke = ["--smoke"] if args.smoke else []
    # Smoke: one row bucket for tuning shows the path works, not which setting wins.
    ragged = (["--shapes=40x128", "--rows=3"] if args.smoke else
              ["--shapes=40x128,51x320,4096x4096", "--rows=1,3,20,100"])
    steps = {"ragged": smoke + ragged + ["--methods=dense,decode,splitk,tiled,auto",
                                         "--iters=1", "--repeats=1"]}
    if args.tune:
        steps["tune"] = smoke + (["--rows=20"] if args.smoke else []) + [
            "--tune", "--methods=decode,splitk,tiled"]
    steps["bench"] = list(smoke)
    return {name: argv + [f"--out={os.path.join(args.out, name + '.json')}"]
            for name, argv in steps.items()}


def failed_rows(out: str) -> list[tuple]:
    """Kernel rows that failed in ragged.json and bench.json (torch's rows aside)."""
    failed = []
    for name in ("ragged", "bench"):
        with open(os.path.join(out, f"{name}.json")) as f:
            rows = json.load(f)["rows"]
        failed += [(name, r["N"], r["K"], r["M"], r["method"], r["error"]) for r in rows
                   if "error" in r and not r["method"].startswith("torch")]
    return failed


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices(), flush=True)
    if not args.smoke and jax.default_backend() != "gpu":
        print("no GPU visible to JAX; --smoke runs the steps on a CPU", file=sys.stderr)
        return 2
    print("== 1. Triton lowering of every kernel variant", flush=True)
    print(f"lowered and checked {lowering.check_all()} kernel variants for CUDA", flush=True)
    titles = {"ragged": "2. numerics on the device: ragged N, K and M against the dense product",
              "tune": "2b. tuning the launch settings", "bench": "3. the default benchmark"}
    for name, step_argv in step_arguments(args).items():
        print(f"== {titles[name]}", flush=True)
        status = bench_sparse_matmul.main(step_argv)
        if status:
            return status
        if name == "tune":
            tuning.clear_cache()  # the benchmark reads the table just written
    print("== 4. end to end: greedy decoding tokens/s, 2:4 SparseLinear against dense",
          flush=True)
    status = bench_decode.main((["--smoke"] if args.smoke else []) +
                               [f"--out={os.path.join(args.out, 'decode.json')}"])
    if status:
        return status
    failed = failed_rows(args.out)
    for row in failed:
        print("FAILED", *row)
    print(f"{len(failed)} kernel rows failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
