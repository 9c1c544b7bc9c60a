r"""Benchmark: memory and time of one-shot pruning streamed block by block against the whole
model in memory, on random Llama-shaped checkpoints of growing size (bfloat16 on disk).

Launch (the table and plot of docs/scaling.md; about an hour on 2 CPU cores; the random
checkpoints, 9.5 GB for the four sizes, are kept in config.models_dir for reruns):
  python -m experiments.bench_streaming --config=configs/bench_streaming.py \
      --config.out=runs/bench_streaming/bench_streaming.json
Smoke run (a 4-block tiny model, Wanda 2:4 streamed; the whole-model mode is the prune job's
usual path):
  python -m experiments.bench_streaming --config=configs/bench_streaming.py:runlocal
"""

import ml_collections


def get_config(arg=None):
    """The benchmark; ``arg="runlocal"`` shrinks it to a smoke run."""
    config = ml_collections.ConfigDict()
    # Shapes of experiments/bench_streaming.py's SHAPES: SmolLM2-135M and -360M, Llama-3.2-1B
    # (1.2B parameters) and Llama-3.2-3B, with random weights.
    config.sizes = "135m,360m,1.2b,3b"
    config.methods = "wanda,sparsegpt"  # configs/METHOD.py, each with pattern 2:4
    config.modes = "streamed,whole"  # streamed: config.stream=True; whole: loaded whole
    config.param_dtype = "bfloat16"
    config.num_segments = 8  # calibration segments (Python's help topics)
    config.length = 128  # tokens per segment
    config.batch_size = 8
    # A whole-model run whose estimated peak (bench_streaming.whole_model_gb: two copies, and
    # on a CPU a float32 copy of bfloat16 weights) would pass this is reported, not run.
    config.memory_limit_gb = 20.0
    config.models_dir = "runs/bench_streaming_models"  # the random checkpoints, kept
    config.out = ""  # JSON path, written atomically; the PNG goes beside it
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("sizes", "tiny"), ("methods", "wanda"), ("modes", "streamed"),
                                 ("models_dir", ""),
                                 ("num_segments", 4), ("length", 32), ("batch_size", 2))
    return config
