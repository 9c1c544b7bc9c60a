r"""Exports a pruned model and reads each export back with transformers: the logits it gets
against jaxprune's (``jaxprune.models.reader_parity``).

  python -m experiments.export_check --config=configs/export_check.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.out=runs/export_check.json

The model is pruned by the config's one-shot method (SparseGPT 2:4), then quantized by its
quantizer (GPTQ int4) keeping the zeros. Each GGUF type of ``config.gguf_types`` holds the
pruned float model (the type's own rounding is the expected error); the compressed-tensors
checkpoint holds the quantized one (the grid is stored exactly, so only float arithmetic
differs). Prints a markdown table and, with ``config.out``, writes the rows as JSON.
"""

from __future__ import annotations

import os
import tempfile

from absl import app
from ml_collections import config_flags

from experiments import common
from jaxprune import oneshot
from jaxprune.models import reader_parity

_CONFIG = config_flags.DEFINE_config_file("config", None, "Export check configuration.")
COLUMNS = ["export", "file MB", "rel_max_diff", "top1_agreement", "perplexity",
           "reference_perplexity", "jaxprune_rel_max_diff"]


def check_config(config) -> tuple[list[str], object, object]:
    """The GGUF types and the one-shot settings (without and with the quantizer).

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    types = [t for t in config.gguf_types.split(",") if t]
    reader_parity.check_gguf_types(types, "config.gguf_types")
    if config.quantize not in ("rtn", "gptq"):
        raise ValueError(f"config.quantize must be 'rtn' or 'gptq' (the compressed-tensors "
                         f"export needs a grid), got {config.quantize!r}")
    fields = {n: config[n] for n in oneshot.registry.config_fields() if n in config}
    pruning = oneshot.settings_from_config({**fields, "quantize": "none"})
    quantizer = oneshot.settings_from_config(fields).quantization
    common.check_eval_config(config)
    return types, pruning, quantizer


def export_rows(config, settings, model, tokenizer, directory: str) -> list[dict]:
    """Prunes and quantizes ``model`` by ``settings`` (``check_config``'s), then writes each
    export into ``directory`` and compares the readers' logits
    (``reader_parity.exports_read_back``)."""
    types, pruning, quantizer = settings
    segments = common.calibration_segments(config.calibration, tokenizer)
    pruned = oneshot.prune_oneshot(model, segments, pruning).model
    quantized = oneshot.quantize_model(pruned, segments, quantizer, batch_size=config.batch_size)
    stream = common.evaluation_tokens(config.eval, tokenizer)
    tokens = stream[:config.eval.window * config.eval.max_windows].reshape(-1, config.eval.window)
    return reader_parity.exports_read_back(pruned, quantized, tokens, directory,
                                           gguf_types=types, sparsity=config.pattern,
                                           quant_label=quantizer.spec.label)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config=configs/export_check.py")
    config = common.apply_runlocal(_CONFIG.value)
    with common.usage_errors():
        settings = check_config(config)
        common.check_text_config("calibration", config.calibration)
        model, tokenizer = common.load_model(config)
    if config.export_dir:
        os.makedirs(config.export_dir)  # refuses to mix with an earlier run's files
        rows = export_rows(config, settings, model, tokenizer, config.export_dir)
    else:
        with tempfile.TemporaryDirectory() as directory:
            rows = export_rows(config, settings, model, tokenizer, directory)
    formats = {"file MB": ".1f", "rel_max_diff": ".2e", "jaxprune_rel_max_diff": ".2e",
               "top1_agreement": ".4f", "perplexity": ".2f", "reference_perplexity": ".2f"}
    print(common.markdown_table(rows, COLUMNS, formats))
    if config.out:
        os.makedirs(os.path.dirname(os.path.abspath(config.out)), exist_ok=True)
        common.write_json_atomic(config.out, {"config": config.to_dict(), "rows": rows,
                                              "git": common.git_revision(),
                                              "packages": common.package_versions()})


if __name__ == "__main__":
    common.run_main(main)
