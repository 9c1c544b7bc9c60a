r"""The production pipeline, one row of docs/results.md's compression table per argument:
prune (one-shot or a structured cut) -> recover (masked LoRA, or distillation after a cut) ->
quantize -> export -> evaluate.

Launch (ROW from ``ROWS``; add ",runlocal" for the tiny-model smoke run):
  python -m experiments.compress --config=configs/compress.py:sparsegpt_2of4_int4 \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/compress/ROW
Exports: --config.save_gguf=Q4_0 (one-shot rows), --config.save_compressed=True (quantized
one-shot rows). One-shot rows are configs/oneshot_base.py's fields, structured rows
configs/structured.py's; experiments.compress runs each through its job.
"""

from configs import structured
from configs.oneshot_base import oneshot_config

INT4 = dict(quant_bits=4, quant_group_size=64, quant_symmetric=True)
# Row -> (method, pattern, one-shot fields) for the one-shot chain.
ONESHOT_ROWS = {
    "dense": ("dense", "per_output", {}),
    "int8_rtn": ("dense", "per_output", dict(quantize="rtn", quant_bits=8, quant_group_size=0)),
    "int8_gptq": ("dense", "per_output", dict(quantize="gptq", quant_bits=8,
                                              quant_group_size=0)),
    "int4_rtn": ("dense", "per_output", dict(quantize="rtn", **INT4)),
    "int4_gptq": ("dense", "per_output", dict(quantize="gptq", **INT4)),
    "sparsegpt_2of4": ("sparsegpt", "2:4", {}),
    "sparsegpt_2of4_int4": ("sparsegpt", "2:4", dict(quantize="joint", **INT4)),
    # The same with the tied embedding table at int8 (one scale per token): a fifth of the
    # float16 model is the table, which the 2:4 + int4 blocks alone cannot bring under 30%.
    "sparsegpt_2of4_int4_emb8": ("sparsegpt", "2:4", dict(quantize="joint", **INT4,
                                                          quant_embedding_bits=8)),
    "sparsegpt_2of4_lora": ("sparsegpt", "2:4", dict(recover="lora")),
    "sparsegpt_2of4_lora_int4": ("sparsegpt", "2:4", dict(recover="lora", quantize="gptq",
                                                          **INT4)),
    "sparsegpt_2of4_lora_int4_emb8": ("sparsegpt", "2:4", dict(
        recover="lora", quantize="gptq", **INT4, quant_embedding_bits=8)),
}
# Row -> (configs/structured.py argument, quant_settings, top-level fields) for the structured
# chain: the cut, the structured tables' short distillation (structured.SHORT_DISTILL), then
# GPTQ int4. The MLP cut keeps 1264 channels, which groups of 64 do not divide; 16 do.
STRUCTURED_ROWS = {
    "depth4_int4": ("depth4,distill", dict(quant_group_size=64), {}),
    "depth4_int4_emb8": ("depth4,distill", dict(quant_group_size=64),
                         dict(quant_embedding_bits=8)),
    "mlp_int4": ("mlp,distill", dict(quant_group_size=16), {}),
}
ROWS = (*ONESHOT_ROWS, *STRUCTURED_ROWS)


def get_config(arg=None):
    """``arg``: a key of ``ROWS`` (default ``sparsegpt_2of4_int4``), optionally ",runlocal"."""
    parts = [p for p in (arg or "").split(",") if p]
    rows = [p for p in parts if p != "runlocal"] or ["sparsegpt_2of4_int4"]
    if len(rows) != 1 or rows[0] not in ROWS:
        raise ValueError(f"configs/compress.py takes one row of {list(ROWS)}, plus "
                         f"'runlocal', got {arg!r}")
    runlocal = "runlocal" in parts
    row = rows[0]
    if row in STRUCTURED_ROWS:
        cut, settings, fields = STRUCTURED_ROWS[row]
        config = structured.get_config(cut + (",runlocal" if runlocal else ""))
        config.train.update(structured.SHORT_DISTILL)
        config.quantize = "gptq"
        config.quant_settings.update(settings)
        config.update(fields)
        return config
    method, pattern, fields = ONESHOT_ROWS[row]
    config = oneshot_config(method, pattern, "runlocal" if runlocal else None)
    config.sparsity = 0.5 if method != "dense" else 0.0
    config.update(fields)
    if runlocal:
        config.runlocal_overrides = (*config.runlocal_overrides, ("model", "tiny-llama"))
    return config
