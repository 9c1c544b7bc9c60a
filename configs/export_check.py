r"""A pruned SmolLM2 exported and read back by transformers, per export type: GGUF (F16, Q8_0,
Q4_0) of SparseGPT 2:4, and compressed-tensors of the same 2:4 model after GPTQ int4.

Launch (about 15 minutes on 2 CPU cores):
  python -m experiments.export_check --config=configs/export_check.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.out=runs/export_check.json
Smoke run (tiny random model, built-in text): --config=configs/export_check.py:runlocal
"""

from configs.oneshot_base import oneshot_config

GGUF_TYPES = "F16,Q8_0,Q4_0"


def get_config(arg=None):
    """``arg``: empty, or "runlocal" for the tiny-model smoke run."""
    if arg not in (None, "", "runlocal"):
        raise ValueError(f"configs/export_check.py takes nothing or 'runlocal', got {arg!r}")
    config = oneshot_config("sparsegpt", "2:4", arg or None)
    # The compressed-tensors export's grid (GPTQ after the pruning, keeping its zeros).
    config.quantize = "gptq"
    config.quant_bits, config.quant_group_size, config.quant_symmetric = 4, 64, True
    config.gguf_types = GGUF_TYPES  # comma-separated jaxprune.models.gguf_export.TENSOR_TYPES
    # Logits are compared on the first max_windows windows of the evaluation text.
    config.eval.max_windows = 8
    config.export_dir = ""  # where the exports are written; empty: a temporary directory
    config.out = ""  # JSON of the rows; empty: printed only
    config.runlocal_overrides = (*config.runlocal_overrides, ("model", "tiny-llama"),
                                 ("quant_group_size", 32))
    return config
