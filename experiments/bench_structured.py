r"""Benchmark: forward throughput of each structured cut of SmolLM2-135M against the dense model.

  python -m experiments.bench_structured --out=runs/bench_structured.json \
      [--cuts=dense,depth4,depth8,fuse4,mlp,heads6,hidden448] [--batch_size=8] [--seq_len=512]
  python -m experiments.bench_structured --smoke   # tiny random model, seconds

Speed depends on the shapes a cut leaves, not on which units it removed, so every cut here
takes its units by weight magnitude (width) or by scores on a few random tokens (depth, fusion):
no calibration text is needed. Each model's jitted forward pass is compiled and run once
untimed, then timed --repeats times on the same batch; the table gives medians, tokens/s and
the ratio to the dense model, with the parameter counts. Writes JSON (atomically) with every
timing, the machine and the package versions.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx

from configs import structured as structured_config
from experiments import common, structured_job
from jaxprune import models

_MODEL = flags.DEFINE_string("model", "smollm2-135m", "Model name for models.load.")
_CUTS = flags.DEFINE_list("cuts", list(structured_config.CUTS),
                          "Cuts of configs/structured.py to time; 'dense' is always timed.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Sequences per forward pass.")
_SEQ = flags.DEFINE_integer("seq_len", 512, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed forward passes per model.")
_OUT = flags.DEFINE_string("out", "", "JSON output path (optional).")
_SMOKE = flags.DEFINE_bool("smoke", False, "The tiny random model with the cuts scaled to it "
                           "(configs/structured.py runlocal sizes), 2 passes of 2 x 64 tokens.")


def student_of(cut_name: str, model, segments: np.ndarray):
    """``model`` cut to the shapes of ``configs/structured.py:CUT``."""
    config = structured_config.get_config(cut_name + (",runlocal" if _SMOKE.value else ""))
    config = common.apply_runlocal(config)
    config.model = model_name()
    if config.cut.kind == "width":  # needs no text; depth and fusion keep their defaults
        config.cut.criterion = "magnitude"
    structured_job.check_against_model(config, model.config)
    return structured_job.cut_model(config, model, segments)[0]


def model_name() -> str:
    return "tiny-llama" if _SMOKE.value else _MODEL.value


def forward_seconds(model, tokens: jax.Array, repeats: int) -> tuple[float, list[float]]:
    """Compile seconds and the timed runs of the jitted forward pass on ``tokens``."""
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens))
    start = time.perf_counter()
    forward(state, tokens).block_until_ready()
    compile_seconds = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(state, tokens).block_until_ready()
        runs.append(time.perf_counter() - start)
    return compile_seconds, runs


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = [c for c in _CUTS.value if c not in structured_config.CUTS]
    if unknown:
        raise app.UsageError(f"--cuts: unknown cut(s) {unknown}; allowed: "
                             f"{list(structured_config.CUTS)}")
    for name, flag in (("batch_size", _BATCH), ("seq_len", _SEQ), ("repeats", _REPEATS)):
        if flag.value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {flag.value}")
    batch, seq, repeats = (2, 64, 2) if _SMOKE.value else (_BATCH.value, _SEQ.value,
                                                           _REPEATS.value)
    model, _ = models.load(model_name())
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    segments = rng.integers(0, vocab, (2, 64)).astype(np.int32)  # for depth scores only
    tokens = jnp.asarray(rng.integers(0, vocab, (batch, seq)), jnp.int32)
    cuts = ["dense", *[c for c in _CUTS.value if c != "dense"]]
    rows = []
    for cut in cuts:
        student = student_of(cut, model, segments)
        compile_seconds, runs = forward_seconds(student, tokens, repeats)
        median = statistics.median(runs)
        rows.append({
            "cut": cut, "params": student.config.num_params(),
            "params_non_embedding": student.config.num_params(include_embeddings=False),
            "median_seconds": median, "tokens/s": tokens.size / median,
            "compile_seconds": compile_seconds, "runs": runs})
        logging.info("%s: %.3f s per pass (median of %d), %.0f tokens/s", cut, median,
                     len(runs), tokens.size / median)
    for row in rows:
        row["vs dense"] = rows[0]["median_seconds"] / row["median_seconds"]
    print(f"{model_name()}: forward pass of {batch} x {seq} tokens, float32, "
          f"median of {repeats} after compiling; {os.cpu_count()} CPUs "
          f"({platform.machine()}), {jax.default_backend()}")
    print(common.markdown_table(rows, ["cut", "params", "params_non_embedding",
                                       "median_seconds", "tokens/s", "vs dense"],
                                {"tokens/s": ".0f", "vs dense": ".2f", "median_seconds": ".3f"}))
    if _OUT.value:
        common.write_json_atomic(_OUT.value, {
            "model": model_name(), "batch_size": batch, "seq_len": seq,
            "repeats": repeats, "rows": rows, "cpus": os.cpu_count(),
            "machine": platform.machine(), "backend": jax.default_backend(),
            "git": common.git_revision(), "packages": common.package_versions()})
        print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    common.run_main(main)
