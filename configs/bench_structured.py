r"""Benchmark: forward throughput of each structured cut of SmolLM2-135M against dense.

Launch (the table of docs/results.md):
  python -m experiments.bench_structured --config=configs/bench_structured.py \
      --config.out=runs/bench_structured.json
Smoke run (tiny random model, the cuts scaled to it, seconds):
  python -m experiments.bench_structured --config=configs/bench_structured.py:runlocal
"""

import ml_collections

from configs.structured import CUTS, RUNLOCAL_CUTS

CUT_FIELDS = dict(kind="none", criterion="", blocks=0, heads_per_group=0, mlp_channels=0,
                  hidden=0, fusion="average", rank=64)
# One cut per shape: LaCo and low-rank fusion leave fuse4's shapes (and fuse4 depth4's), and a
# search's shape is known only after it has run.
SHAPE_CUTS = {name: spec for name, spec in CUTS.items()
              if spec["kind"] != "search" and spec.get("fusion", "average") == "average"}


def get_config(arg=None):
    """The benchmark; ``arg="runlocal"`` shrinks it to a smoke run."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"
    # Speed depends on the shapes a cut leaves, not on which units it removed: width cuts take
    # their units by weight magnitude, depth cuts and fusions score a few random tokens.
    config.cuts = ml_collections.ConfigDict(
        {name: {**CUT_FIELDS, **spec, **({"criterion": "magnitude"}
                                         if spec["kind"] == "width" else {})}
         for name, spec in SHAPE_CUTS.items()})
    # The cuts to time, comma-separated, in table order (dense is always timed first).
    config.only = ",".join(SHAPE_CUTS)
    config.batch_size = 8
    config.seq_len = 512
    config.repeats = 10
    config.out = ""  # JSON output path, written atomically
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (
        ("model", "tiny-llama"), ("batch_size", 2), ("seq_len", 64), ("repeats", 2),
        *((f"cuts.{name}.{field}", value) for name, sizes in RUNLOCAL_CUTS.items()
          for field, value in sizes.items() if name in SHAPE_CUTS))
    return config
