#!/usr/bin/env bash
# Everything a first GPU run of the 2:4 kernels needs, in one go (an image with jax[cuda],
# flax and numpy is enough; torch adds its rows). From the repository root:
#   bash experiments/gpu_check.sh            # lowering, ragged numerics, benchmark, decoding
#   TUNE=1 bash experiments/gpu_check.sh     # also --tune, writing jaxprune/kernels/tuned_blocks.json
#   SMOKE=1 bash experiments/gpu_check.sh    # on a CPU: the same steps, tiny, interpreted (tests)
# Results go to $OUT (default runs/gpu_check): ragged.json, bench.json (and their .md tables),
# decode.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout itself, no install step
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python}
if [[ "${SMOKE:-0}" == "1" ]]; then
  # One row bucket for tuning: the smoke run shows the path works, not which setting wins.
  BENCH=(--smoke) RAGGED=(--shapes=40x128 --rows=3) DEFAULT=() TUNE_ROWS=(--rows=20)
else
  BENCH=() RAGGED=(--shapes=40x128,51x320,4096x4096 --rows=1,3,20,100) DEFAULT=() TUNE_ROWS=()
  "$PYTHON" - <<'PY'
import jax
print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices())
assert jax.default_backend() == "gpu", "no GPU visible to JAX"
PY
fi
echo "== 1. Triton lowering of every kernel variant"
"$PYTHON" -m jaxprune.kernels.lowering
echo "== 2. numerics on the device: ragged N, K and M against the dense product"
"$PYTHON" -m experiments.bench_sparse_matmul "${BENCH[@]}" "${RAGGED[@]}" \
    --methods=dense,decode,splitk,tiled,auto --iters=1 --repeats=1 --out="$OUT/ragged.json"
if [[ "${TUNE:-0}" == "1" ]]; then
  echo "== 2b. tuning the launch settings"
  "$PYTHON" -m experiments.bench_sparse_matmul "${BENCH[@]}" "${TUNE_ROWS[@]}" --tune \
      --methods=decode,splitk,tiled --out="$OUT/tune.json"
fi
echo "== 3. the default benchmark"
"$PYTHON" -m experiments.bench_sparse_matmul "${BENCH[@]}" "${DEFAULT[@]}" --out="$OUT/bench.json"
echo "== 4. end to end: greedy decoding tokens/s, 2:4 SparseLinear against dense"
"$PYTHON" -m experiments.bench_decode "${BENCH[@]}" --out="$OUT/decode.json"
"$PYTHON" - "$OUT" <<'PY'
import json, sys
failed = []
for name in ("ragged", "bench"):
    rows = json.load(open(f"{sys.argv[1]}/{name}.json"))["rows"]
    failed += [(name, r["N"], r["K"], r["M"], r["method"], r["error"]) for r in rows
               if "error" in r and not r["method"].startswith("torch")]
for row in failed:
    print("FAILED", *row)
print(f"{len(failed)} kernel rows failed")
sys.exit(1 if failed else 0)
PY
