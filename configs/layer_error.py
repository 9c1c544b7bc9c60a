r"""Layer-wise diagnostic: each method's pruned kernels against the dense layer's outputs on the
calibration tokens (mean squared output error, and the squared mean shift DSnoT targets), for
the linear layers of a few blocks, every method pruning the same dense layer.

Launch (SmolLM2, 16 x 512 calibration tokens, blocks 0, 10 and 20 at 2:4; about 2 minutes on
2 CPU cores):
  python -m experiments.layer_error --config=configs/layer_error.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.out=runs/layer_error.json
At 70%, each method by its own comparison group (Wanda per output, SparseGPT unstructured):
  python -m experiments.layer_error --config=configs/layer_error.py:70 ...
Int4 (groups of 64, symmetric) of the dense layers by round-to-nearest and by GPTQ, on the
compression table's 64 x 512 calibration tokens:
  python -m experiments.layer_error --config=configs/layer_error.py:int4 ...
Smoke run (tiny random model, built-in text):
  python -m experiments.layer_error --config=configs/layer_error.py:runlocal
"""

import ml_collections

from configs.oneshot_base import UNSTRUCTURED_GROUP, oneshot_config

# label -> the one-shot fields that differ from the base (method, refine, ...).
VARIANTS = {
    "wanda": {"method": "wanda"},
    "wanda+dsnot": {"method": "wanda", "refine": "dsnot"},
    "sparsegpt": {"method": "sparsegpt"},
    "sparsegpt+dsnot": {"method": "sparsegpt", "refine": "dsnot"},
}
INT4_VARIANTS = {"rtn": {"method": "dense", "quantize": "rtn"},
                 "gptq": {"method": "dense", "quantize": "gptq"}}


def get_config(arg=None):
    """The diagnostic at 2:4; ``arg="70"``: at 70%, each method by its own comparison group
    (as in the beyond table); ``arg="int4"``: the dense layers quantized, no pruning;
    ``"runlocal"`` (alone or after a comma) shrinks it to the tiny model."""
    parts = [p for p in (arg or "").split(",") if p]
    if any(p not in ("runlocal", "70", "int4") for p in parts) or {"70", "int4"} <= set(parts):
        raise ValueError(f"configs/layer_error.py takes one of '70' and 'int4', and/or "
                         f"'runlocal', got {arg!r}")
    unstructured, int4 = "70" in parts, "int4" in parts
    config = oneshot_config("wanda", "per_output" if unstructured or int4 else "2:4",
                            "runlocal" if "runlocal" in parts else None)
    config.sparsity = 0.0 if int4 else 0.7 if unstructured else 0.5
    config.calibration.num_segments = 64 if int4 else 16
    config.blocks = (0, 10, 20)
    config.variants = ml_collections.ConfigDict(INT4_VARIANTS if int4 else {
        label: dict(fields, pattern=UNSTRUCTURED_GROUP[fields["method"]]) if unstructured
        else fields for label, fields in VARIANTS.items()})
    config.out = ""  # JSON of the rows; empty: printed only
    config.runlocal_overrides = (*config.runlocal_overrides, ("model", "tiny-llama"),
                                 ("blocks", (0, 1)))
    return config
