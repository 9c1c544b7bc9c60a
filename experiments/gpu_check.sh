#!/usr/bin/env bash
# Everything a first GPU run of the 2:4 kernels needs, in one go (an image with jax[cuda],
# flax and numpy is enough; torch adds its rows). From the repository root:
#   bash experiments/gpu_check.sh            # lowering, ragged numerics, benchmark, decoding
#   TUNE=1 bash experiments/gpu_check.sh     # also tunes, writing jaxprune/kernels/tuned_blocks.json
#   SMOKE=1 bash experiments/gpu_check.sh    # on a CPU: the same steps, tiny, interpreted (tests)
# Results go to $OUT (default runs/gpu_check): ragged.json, bench.json (and their .md tables),
# decode.json. The steps run in one Python process: experiments/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout itself, no install step
export PYTHONUNBUFFERED=1
args=(--out="${OUT:-runs/gpu_check}")
[[ "${SMOKE:-0}" == "1" ]] && args+=(--smoke)
[[ "${TUNE:-0}" == "1" ]] && args+=(--tune)
exec "${PYTHON:-python}" -m experiments.gpu_check "${args[@]}"
