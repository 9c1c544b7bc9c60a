r"""Benchmark: time and memory of the one-shot job as the device mesh grows (fake CPU devices).

Launch (the table of docs/scaling.md):
  python -m experiments.bench_scaling --config=configs/bench_scaling.py \
      --config.out=runs/bench_scaling.json [--config.method=wanda]
Smoke run (the tiny model, one 2x2 mesh of four fake devices: both axes, set by the config):
  python -m experiments.bench_scaling --config=configs/bench_scaling.py:runlocal
"""

import ml_collections


def get_config(arg=None):
    """The benchmark; ``arg="runlocal"`` shrinks it to a smoke run."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"
    config.method = "sparsegpt"  # the one-shot config file configs/METHOD.py
    config.meshes = "1x1,2x1,4x1,8x1,2x4,1x8"  # DATAxMODEL, comma-separated
    config.num_segments = 16  # calibration segments (Python's help topics)
    config.length = 256  # tokens per segment
    config.batch_size = 8  # segments per forward pass; every mesh's data size must divide it
    config.out = ""  # JSON output path, written atomically
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("model", "tiny-llama"), ("meshes", "2x2"),
                                 ("num_segments", 4), ("length", 32), ("batch_size", 2))
    return config
