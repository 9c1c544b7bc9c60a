r"""Benchmark: forward throughput of each structured cut of SmolLM2-135M against the dense model.

  python -m experiments.bench_structured --config=configs/bench_structured.py \
      --config.out=runs/bench_structured.json [--config.only=depth4,mlp]
  python -m experiments.bench_structured --config=configs/bench_structured.py:runlocal

Each model's jitted forward pass is compiled and run once untimed, then timed
``config.repeats`` times on the same batch; the table gives medians, tokens/s and the ratio to
the dense model, with the parameter counts. Writes JSON (atomically) with every timing, the
machine and the package versions.
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
from ml_collections import config_flags

from experiments import common, structured_job
from jaxprune import models, structured


def student_of(cut, model, segments: np.ndarray):
    """``model`` cut to the shapes ``cut`` (a ``config.cuts`` entry) describes."""
    structured_job.check_cut_fits(cut, model.config)
    if cut.kind == "none":
        return model
    criterion = structured_job.CRITERIA[cut.kind][cut.criterion]
    if cut.kind == "width":
        plan = structured.plan_width(model.config, criterion.importance(model, segments, 2),
                                     heads_per_group=cut.heads_per_group,
                                     mlp_channels=cut.mlp_channels, hidden=cut.hidden)
        return structured.cut_width(model, plan)
    scores = criterion.scores(model, segments, cut.blocks, 2)
    return structured.cut_depth(model, criterion.plan(scores, cut.blocks))


def chosen_cuts(config) -> list[str]:
    """"dense" and the cuts ``config.only`` names (all of ``config.cuts`` when empty).

    Raises:
      app.UsageError: for an unknown name or a size below 1.
    """
    only = [c for c in config.only.split(",") if c] or list(config.cuts)
    unknown = [c for c in only if c not in config.cuts]
    if unknown:
        raise app.UsageError(f"config.only: unknown cut(s) {unknown}; allowed: "
                             f"{list(config.cuts)}")
    for name in ("batch_size", "seq_len", "repeats"):
        if not isinstance(config[name], int) or config[name] < 1:
            raise app.UsageError(f"config.{name} must be an integer >= 1, got {config[name]!r}")
    return ["dense", *[c for c in only if c != "dense"]]


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


def time_cuts(config) -> list[dict]:
    """Times the dense model and each chosen cut; one row per model, "vs dense" included.

    Raises:
      app.UsageError: for an unknown cut or a bad size (before loading anything).
    """
    cuts = chosen_cuts(config)
    model, _ = models.load(config.model)
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    segments = rng.integers(0, vocab, (2, 64)).astype(np.int32)  # for depth scores only
    tokens = jnp.asarray(rng.integers(0, vocab, (config.batch_size, config.seq_len)), jnp.int32)
    rows = []
    for cut in cuts:
        student = student_of(config.cuts[cut], model, segments)
        compile_seconds, runs = forward_seconds(student, tokens, config.repeats)
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
    return rows


def report(config, rows: list[dict]) -> None:
    """Prints the table and writes the JSON of ``config.out``."""
    print(f"{config.model}: forward pass of {config.batch_size} x {config.seq_len} tokens, "
          f"float32, median of {config.repeats} after compiling; {os.cpu_count()} CPUs "
          f"({platform.machine()}), {jax.default_backend()}")
    print(common.markdown_table(rows, ["cut", "params", "params_non_embedding",
                                       "median_seconds", "tokens/s", "vs dense"],
                                {"tokens/s": ".0f", "vs dense": ".2f", "median_seconds": ".3f"}))
    if config.out:
        common.write_json_atomic(config.out, {
            "model": config.model, "batch_size": config.batch_size, "seq_len": config.seq_len,
            "repeats": config.repeats, "rows": rows, "cpus": os.cpu_count(),
            "machine": platform.machine(), "backend": jax.default_backend(),
            "git": common.git_revision(), "packages": common.package_versions()})
        print(f"wrote {config.out}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.apply_runlocal(flags.FLAGS.config, common.command_line_fields())
    report(config, time_cuts(config))


if __name__ == "__main__":
    # Defined here, not at import, so tests can import the module beside other binaries.
    config_flags.DEFINE_config_file("config", "configs/bench_structured.py",
                                    "Benchmark configuration.")
    common.run_main(main)
