r"""Time and memory of the one-shot job as the device mesh grows (fake CPU devices here).

  python -m experiments.bench_scaling --config=configs/bench_scaling.py \
      --config.out=runs/bench_scaling.json [--config.method=wanda]
  python -m experiments.bench_scaling --config=configs/bench_scaling.py:runlocal

Runs ``experiments.prune`` on SmolLM2 (Python help topics, 16 segments of 256 tokens, minimal
evaluation) once per mesh, each in its own process with that many fake CPU devices, and prints
pruning seconds, peak memory, and the achieved sparsity and perplexity (the same for every
mesh up to float32 rounding: a check that the mesh changes where the work runs, not what it
computes). On one machine the fake devices share its cores: the table shows the cost of the
sharded program (collectives, per-device copies), not a speed-up.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile

from absl import app
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench_scaling.py",
                                          "Benchmark configuration.")


def mesh_shape(mesh: str) -> tuple[int, int]:
    """``(data, model)`` of a mesh written ``DATAxMODEL``.

    Raises:
      app.UsageError: for a mesh that is not two integers.
    """
    try:
        data, model = (int(v) for v in mesh.split("x"))
    except ValueError:
        raise app.UsageError(f"config.meshes: {mesh!r} is not DATAxMODEL") from None
    return data, model


def prune_command(config, mesh: str, workdir: str) -> list[str]:
    """The prune binary's command line for one mesh (``DATAxMODEL``)."""
    data, model = mesh_shape(mesh)
    return [
        sys.executable, "-m", "experiments.prune", f"--config=configs/{config.method}.py",
        f"--config.model={config.model}", "--config.calibration.source=pydoc",
        f"--config.calibration.num_segments={config.num_segments}",
        f"--config.calibration.length={config.length}", f"--config.batch_size={config.batch_size}",
        "--config.eval.source=pydoc", "--config.eval.max_windows=1", "--config.eval.window=64",
        f"--config.num_cpu_devices={data * model}", f"--config.mesh_data={data}",
        f"--config.mesh_model={model}", f"--config.workdir={workdir}"]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
    meshes = [m for m in config.meshes.split(",") if m]
    for mesh in meshes:  # every mesh checked before the first run
        mesh_shape(mesh)
    rows = []
    for mesh in meshes:
        with tempfile.TemporaryDirectory() as workdir:
            result = subprocess.run(prune_command(config, mesh, workdir), capture_output=True,
                                    text=True, check=False)
            if result.returncode:  # a failed run, not a bad command line
                raise RuntimeError(f"mesh {mesh}: the prune binary failed:\n"
                                   f"{result.stderr[-2000:]}")
            with open(os.path.join(workdir, "results.json")) as f:
                row = json.load(f)["rows"][-1]
        rows.append({"mesh (data x model)": mesh, "devices": math.prod(mesh_shape(mesh)),
                     "prune seconds": row["prune seconds"],
                     "peak memory MB": row["peak memory MB"],
                     # Every mesh prunes the same model: these agree up to float32 rounding.
                     "sparsity": row["sparsity"], "perplexity": row["perplexity"]})
        print(rows[-1], flush=True)
    print(common.markdown_table(rows, list(rows[0]),
                                {"prune seconds": ".1f", "perplexity": ".3f"}))
    if config.out:
        common.write_json_atomic(config.out, {"method": config.method, "model": config.model,
                                              "rows": rows, "cpus": os.cpu_count()})
        print(f"wrote {config.out}")


if __name__ == "__main__":
    common.run_main(main)
