r"""Layer-wise output errors of one-shot methods on a real model (``oneshot.diagnostics``).

  python -m experiments.layer_error --config=configs/layer_error.py \
      --config.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.out=runs/layer_error.json

Prints a markdown table (block, layer, then each method's mean squared output error and squared
mean shift) and, with ``config.out``, writes the rows as JSON.
"""

from __future__ import annotations

import os

from absl import app
from ml_collections import config_flags

from experiments import common
from jaxprune import oneshot
from jaxprune.oneshot import diagnostics

_CONFIG = config_flags.DEFINE_config_file("config", None, "Layer-error configuration.")


def variants_of(config) -> dict:
    """Label -> ``OneShotConfig`` for each of ``config.variants`` (through the registry): the
    base's one-shot fields with the variant's own (a ``pattern`` among them) on top.

    Raises:
      ValueError: naming the variant, for a field that is not a one-shot field, a bad value,
        or a method that cannot prune by its pattern.
    """
    fields = {name: config[name] for name in oneshot.registry.config_fields() if name in config}
    variants = {}
    for label, overrides in config.variants.items():
        unknown = set(overrides) - set(fields)
        if unknown:
            raise ValueError(f"config.variants.{label} sets {sorted(unknown)}, which are not "
                             f"one-shot fields")
        try:
            variants[label] = oneshot.settings_from_config({**fields, **overrides})
            diagnostics.variant_plan(variants[label])
        except ValueError as err:
            raise ValueError(f"config.variants.{label}: {err}") from None
    return variants


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config=configs/layer_error.py")
    config = common.apply_runlocal(_CONFIG.value)
    with common.usage_errors():
        variants = variants_of(config)
        model, tokenizer = common.load_model(config)
        segments = common.calibration_segments(config.calibration, tokenizer)
        if max(config.blocks) >= len(model.layers):
            raise ValueError(f"config.blocks has {max(config.blocks)}; the model has "
                             f"{len(model.layers)} blocks")
    rows = diagnostics.layer_errors(model, segments, variants, config.blocks,
                                    batch_size=config.batch_size)
    labels = list(variants)
    table = [{"block": b, "layer": name,
              **{f"{m} mse": r["mse"] for m in labels for r in rows
                 if (r["block"], r["layer"], r["method"]) == (b, name, m)},
              **{f"{m} mean shift": r["mean_sq"] for m in labels for r in rows
                 if (r["block"], r["layer"], r["method"]) == (b, name, m)}}
             for b, name in dict.fromkeys((r["block"], r["layer"]) for r in rows)]
    columns = ["block", "layer", *(f"{m} mse" for m in labels),
               *(f"{m} mean shift" for m in labels)]
    print(common.markdown_table(table, columns, dict.fromkeys(columns[2:], ".4g")))
    if config.out:
        os.makedirs(os.path.dirname(os.path.abspath(config.out)), exist_ok=True)
        common.write_json_atomic(config.out, {"config": config.to_dict(), "rows": rows})


if __name__ == "__main__":
    app.run(main)
