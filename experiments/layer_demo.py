r"""Prunes one synthetic layer with every criterion and pattern, and prints the output error.

  python -m experiments.layer_demo --config=configs/layer_demo.py [--config.sparsity=0.6]

The layer's inputs have a few outlier features. Magnitude pruning ignores them; the
``input_weighted`` criterion (|W_ij| * ||X_i||, written below in a few lines with
``jaxprune.leafwise``) keeps the weights those features feed, and loses far less of the output.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from ml_collections import config_flags

import jaxprune as jp
from experiments import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/layer_demo.py", "Layer demo configuration."
)
FLAGS = flags.FLAGS


@jp.leafwise
def input_weighted(weight: jax.Array, input_norm: jax.Array | None) -> jax.Array:
    """|W_ij| * ||X_i||_2: the weight's magnitude times the norm of the input it multiplies."""
    return jnp.abs(weight) * input_norm[:, None]


CRITERIA = ("random", "magnitude", "input_weighted")


def validate_config(config) -> None:
    """Checks every field the demo reads, before any work.

    Raises:
      ValueError, TypeError: naming the config field, its value and what is allowed.
    """
    for field in ("in_features", "out_features", "num_samples"):
        if not isinstance(config[field], int) or config[field] < 1:
            raise ValueError(f"config.{field} must be a positive integer, got {config[field]!r}")
    if not 0 <= config.num_outlier_features <= config.in_features:
        raise ValueError(f"config.num_outlier_features must be in [0, config.in_features], got "
                         f"{config.num_outlier_features!r}")
    if isinstance(config.sparsity, bool) or not isinstance(config.sparsity, (int, float)) or not (
        0 <= config.sparsity < 1
    ):
        raise ValueError(f"config.sparsity must be in [0, 1), got {config.sparsity!r}")
    for pattern in config.patterns:
        parsed = jp.parse_pattern(pattern)
        if parsed.is_n_of_m and config.in_features % parsed.m:
            raise ValueError(f"config.patterns has {pattern!r}, which needs config.in_features "
                             f"divisible by {parsed.m}, got {config.in_features}")
    unknown = [c for c in config.criteria if c not in CRITERIA]
    if unknown:
        raise ValueError(f"config.criteria has unknown {unknown}; allowed: {list(CRITERIA)}")


def make_layer(config, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Draws inputs ``[samples, in]`` with outlier features and a kernel ``[in, out]``."""
    x_key, w_key, outlier_key = jax.random.split(key, 3)
    inputs = jax.random.normal(x_key, (config.num_samples, config.in_features))
    outliers = jax.random.choice(
        outlier_key, config.in_features, (config.num_outlier_features,), replace=False
    )
    inputs = inputs.at[:, outliers].multiply(config.outlier_scale)
    kernel = jax.random.normal(w_key, (config.in_features, config.out_features))
    return inputs, kernel / jnp.sqrt(config.in_features)


def run_demo(config) -> list[dict]:
    """Prunes the layer under every (criterion, pattern) pair of the config.

    Returns:
      One row per pair: criterion, pattern, achieved sparsity and relative output error
      ``||X W - X W'||_F / ||X W||_F``.
    """
    key = jax.random.PRNGKey(config.seed)
    data_key, random_key = jax.random.split(key)
    inputs, kernel = make_layer(config, data_key)
    params = {"layer": {"kernel": kernel}}
    stats = {"layer": {"kernel": jnp.linalg.norm(inputs, axis=0)}}
    criteria = {
        "random": jp.random_criterion(random_key),
        "magnitude": jp.magnitude,
        "input_weighted": input_weighted,
    }
    reference = inputs @ kernel
    rows = []
    for criterion_name in config.criteria:
        for pattern in config.patterns:
            start = time.perf_counter()
            parsed = jp.parse_pattern(pattern)
            sparsity = None if parsed.is_n_of_m else config.sparsity
            masks = jp.prune(params, criteria[criterion_name], sparsity, pattern=pattern,
                             stats=stats)
            pruned = jp.apply_masks(params, masks)["layer"]["kernel"]
            error = jnp.linalg.norm(reference - inputs @ pruned) / jnp.linalg.norm(reference)
            report = jp.sparsity_report(params, masks)
            rows.append({
                "criterion": criterion_name,
                "pattern": pattern,
                "sparsity": report.masked_sparsity,
                "relative_output_error": float(error),
                "seconds": time.perf_counter() - start,
            })
            logging.info("%s %s: error %.4f", criterion_name, pattern, float(error))
    return rows


def format_table(rows: list[dict]) -> str:
    """Renders the demo rows as a markdown table, one row per criterion, one column per pattern."""
    patterns = list(dict.fromkeys(r["pattern"] for r in rows))
    criteria = list(dict.fromkeys(r["criterion"] for r in rows))
    error = {(r["criterion"], r["pattern"]): r["relative_output_error"] for r in rows}
    lines = [
        "| criterion | " + " | ".join(patterns) + " |",
        "| --- | " + " | ".join("---:" for _ in patterns) + " |",
    ]
    for c in criteria:
        lines.append(f"| {c} | " + " | ".join(f"{error[c, p]:.4f}" for p in patterns) + " |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
        validate_config(config)
    except (TypeError, ValueError) as err:
        raise app.UsageError(str(err)) from None
    with common.claimed_workdir(config) as commit:
        commit()
        rows = run_demo(config)
        write_results(config, rows)


def write_results(config, rows) -> None:
    """Prints the table and (with a workdir) writes results.json."""
    print(f"Relative output error ||XW - XW'|| / ||XW|| of one {config.in_features}x"
          f"{config.out_features} layer at sparsity {config.sparsity} "
          f"(N:M patterns at 1 - N/M), {config.num_outlier_features} outlier input features:\n")
    print(format_table(rows))
    if config.workdir:
        path = os.path.join(config.workdir, "results.json")
        common.write_json_atomic(path, {"config": config.to_dict(), "rows": rows})
        print(f"\nwrote {path}")


if __name__ == "__main__":
    common.run_main(main)
