r"""Time and memory of the one-shot job as the device mesh grows (fake CPU devices here).

  python -m experiments.bench_scaling --out=runs/bench_scaling.json [--method=sparsegpt]

Runs ``experiments.prune`` on SmolLM2 (Python help topics, 16 segments of 256 tokens, no
evaluation) once per mesh, each in its own process with that many fake CPU devices, and prints
pruning seconds and peak memory. On one machine the fake devices share its cores: the table
shows the cost of the sharded program (collectives, per-device copies), not a speed-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

from experiments import common

_METHOD = flags.DEFINE_string("method", "sparsegpt", "One-shot method.")
_MESHES = flags.DEFINE_list("meshes", ["1x1", "2x1", "4x1", "8x1", "2x4", "1x8"],
                            "Meshes as DATAxMODEL.")
_OUT = flags.DEFINE_string("out", "", "JSON output path (optional).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    rows = []
    for mesh in _MESHES.value:
        data, model = (int(v) for v in mesh.split("x"))
        with tempfile.TemporaryDirectory() as workdir:
            command = [
                sys.executable, "-m", "experiments.prune", f"--config=configs/{_METHOD.value}.py",
                "--config.calibration.source=pydoc", "--config.calibration.num_segments=16",
                "--config.calibration.length=256", "--config.batch_size=8",
                "--config.eval.source=pydoc", "--config.eval.max_windows=1",
                "--config.eval.window=64", f"--config.num_cpu_devices={data * model}",
                f"--config.mesh_data={data}", f"--config.mesh_model={model}",
                f"--config.workdir={workdir}"]
            subprocess.run(command, check=True, capture_output=True, text=True)
            with open(os.path.join(workdir, "results.json")) as f:
                row = json.load(f)["rows"][-1]
        rows.append({"mesh (data x model)": mesh, "devices": data * model,
                     "prune seconds": row["prune seconds"],
                     "peak memory MB": row["peak memory MB"]})
        print(rows[-1], flush=True)
    print(common.markdown_table(rows, list(rows[0]), {"prune seconds": ".1f"}))
    if _OUT.value:
        common.write_json_atomic(_OUT.value, {"method": _METHOD.value, "rows": rows,
                                              "cpus": os.cpu_count()})


if __name__ == "__main__":
    common.run_main(main)
