r"""Structured pruning of SmolLM2-135M: depth or width cuts by importance, then distillation.

Launch (the argument picks the cut; add ",distill" for a short logit distillation):
  python -m experiments.structured --config=configs/structured.py:depth4,distill \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/depth4
Cuts: dense (no cut), depth4, depth8 (blocks by block influence), fuse4 (4 pairs of
consecutive blocks each averaged into one, the pairs of smallest angular distance), laco4 and
lowrank4 (the same pairs merged by LaCo's RDSC, or folded by rank-64 updates fitted on the
calibration text; --config.cut.rank sets the rank), fold4 (the 4 blocks depth4 drops, each run
of them folded into the kept block below it by the rank-64 fit), mlp (MLP
channels 1536 -> 1264, about the parameters of 4 blocks), heads6 (query heads 9 -> 6, two
per KV group), hidden448 (hidden size 576 -> 448); --config.cut.criterion picks another
importance (depth: block_influence, angular, drop_one; width: activation, magnitude, taylor).
Smoke run:
  python -m experiments.structured --config=configs/structured.py:heads6,distill,runlocal
"""

import ml_collections

from configs.gradual import training_config

CUTS = {
    "dense": dict(kind="none"),
    "depth4": dict(kind="depth", criterion="block_influence", blocks=4),
    "depth8": dict(kind="depth", criterion="block_influence", blocks=8),
    "fuse4": dict(kind="fuse", criterion="angular", blocks=4),
    "laco4": dict(kind="fuse", criterion="angular", blocks=4, fusion="laco"),
    "lowrank4": dict(kind="fuse", criterion="angular", blocks=4, fusion="lowrank"),
    "fold4": dict(kind="fuse", criterion="block_influence", blocks=4, fusion="lowrank"),
    "mlp": dict(kind="width", criterion="activation", mlp_channels=1264),
    "search100m": dict(kind="search", criterion="activation",
                       search=dict(target_params=100_000_000)),
    "search80m": dict(kind="search", criterion="activation",
                      search=dict(target_params=80_000_000)),
    "heads6": dict(kind="width", criterion="activation", heads_per_group=2),
    "hidden448": dict(kind="width", criterion="activation", hidden=448),
}
# The short, CPU-sized distillation of docs/results.md's structured tables (the sweeps'
# recipe): 32 steps of 4 x 256 tokens (32,768 tokens), about 3 minutes per student on 2 cores.
SHORT_DISTILL = dict(steps=32, batch_size=4, seq_len=256, warmup_steps=4, log_every=4,
                     checkpoint_every=16)
# The same cuts scaled to tiny-llama (2 blocks, 4 heads in 2 groups, 128 channels, hidden 64).
RUNLOCAL_CUTS = {"depth4": dict(blocks=1), "depth8": dict(blocks=1), "fuse4": dict(blocks=1),
                 "laco4": dict(blocks=1), "lowrank4": dict(blocks=1, rank=8),
                 "fold4": dict(blocks=1, rank=8),
                 # tiny-llama has 90,432 parameters
                 "search100m": dict(search=dict(target_params=70_000, tolerance=0.05,
                                                hidden_step=16, mlp_step=32, segments=2,
                                                shortlist=2, rank_steps=2)),
                 "search80m": dict(search=dict(target_params=50_000, tolerance=0.05,
                                               hidden_step=16, mlp_step=32, segments=2,
                                               shortlist=2, rank_steps=2)),
                 "mlp": dict(mlp_channels=96), "heads6": dict(heads_per_group=1),
                 "hidden448": dict(hidden=48)}


def _dotted(prefix: str, fields: dict) -> dict:
    """``{"search": {"segments": 2}}`` -> ``{"cut.search.segments": 2}``."""
    out = {}
    for key, value in fields.items():
        out.update(_dotted(f"{prefix}.{key}", value) if isinstance(value, dict)
                   else {f"{prefix}.{key}": value})
    return out


def get_config(arg=None):
    """``arg``: a key of ``CUTS``, optionally ",distill" and ",runlocal"."""
    parts = [p for p in (arg or "dense").split(",") if p]
    cuts = [p for p in parts if p not in ("distill", "runlocal")]
    if len(cuts) != 1 or cuts[0] not in CUTS:
        raise ValueError(f"configs/structured.py takes one cut of {sorted(CUTS)}, plus "
                         f"'distill' and/or 'runlocal', got {arg!r}")
    config = training_config("smollm2-135m", "dense")
    config.calibration = ml_collections.ConfigDict(dict(
        source="file", path="", split="train", num_segments=64, length=512, seed=0,
        contiguous=True))
    config.calibration_batch_size = 8
    config.cut = ml_collections.ConfigDict(dict(
        kind="none", criterion="", blocks=0, heads_per_group=0, mlp_channels=0, hidden=0,
        seq_agg="mean", batch_agg="l2",
        # fuse cuts: how a pair becomes one block (jaxprune.structured.FUSION_METHODS) and
        # the rank of the low-rank fit's updates
        fusion="average", rank=64,
        # search cuts (Minitron): the budget, the grid, the depth score, how the candidates
        # are ranked (loss on the first `segments` calibration segments, then `rank_steps`
        # distillation steps for the `shortlist` best); the width criterion is cut.criterion
        search=ml_collections.ConfigDict(dict(
            target_params=0, tolerance=0.02, hidden_step=64, mlp_step=128,
            depth_criterion="block_influence", segments=8, shortlist=3, rank_steps=8,
            axes="depth,width"))))
    fields = dict(CUTS[cuts[0]])
    config.cut.search.update(fields.pop("search", {}))
    config.cut.update(fields)
    config.distill = ml_collections.ConfigDict(dict(enabled="distill" in parts,
                                                    temperature=1.0))
    # Distillation: 200 steps of 8 x 512 tokens of the Wikipedia text (819,200 tokens).
    config.train.steps = 200
    config.train.batch_size = 8
    config.train.seq_len = 512
    config.train.learning_rate = 1e-4
    config.train.warmup_steps = 20
    config.train.checkpoint_every = 25
    config.train.log_every = 10
    config.eval.window = 512
    config.save_hf = False  # export the student (uniform widths only) to WORKDIR/hf
    # GGUF of the student for llama.cpp (WORKDIR/model.gguf; per-block widths included): "",
    # "F32", "F16", "Q8_0" or "Q4_0".
    config.save_gguf = ""
    # Quantize the student after the cut (and the distillation): "rtn" or "gptq" on the
    # calibration segments (jaxprune.oneshot.quantize_model); the grid's group must divide every
    # kernel's input size (the mlp cut's 1264 channels take 16, or 0: one scale per output).
    # aware=True distils through qwix's fake quantization on the grid (quantization-aware
    # distillation, jaxprune.training.quantization_aware), then rounds to nearest on it; it
    # needs the distillation and quantize="rtn" (the grid the training saw).
    config.quantize = "none"
    config.quant_settings = ml_collections.ConfigDict(dict(
        quant_bits=4, quant_group_size=64, quant_symmetric=True, blocksize=128, damp=0.01,
        aware=False))
    # With config.quantize: the tied embedding table rounded too, 4 or 8 bits, one scale per
    # token (jaxprune.oneshot.quantize_embedding; the prune job's field of the same name); 0
    # keeps it in float.
    config.quant_embedding_bits = 0
    config.runlocal = "runlocal" in parts
    overrides = dict(config.runlocal_overrides)  # the training config's, then these
    overrides.update({
        "calibration.source": "pydoc", "calibration.num_segments": 4,
        "calibration.length": 64, "train.steps": 20, "train.batch_size": 2,
        "train.checkpoint_every": 5, "train.log_every": 5, "train.warmup_steps": 2,
        **_dotted("cut", RUNLOCAL_CUTS.get(cuts[0], {}))})
    if cuts[0] == "laco4":  # LaCo never fuses block 0: tiny-llama's 2 blocks leave no pair
        overrides["model"] = "mini-llama"
    config.runlocal_overrides = tuple(overrides.items())
    return config
