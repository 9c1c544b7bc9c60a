r"""Runs a sweep: every point of a configs/sweeps/ file, resumable, ending in a table and a plot.

  python -m experiments.sweep --config=configs/sweeps/oneshot_table.py \
      --config.base.calibration.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.base.eval.path=../shared/data/wikitext-2-raw \
      --config.workdir=runs/oneshot_table
Smoke run on the tiny random model:
  python -m experiments.sweep --config=configs/sweeps/oneshot_table.py:runlocal \
      --config.workdir=/tmp/sweep

Every point is resolved and checked (fields, types, files, layer plans) before the first one
runs. A finished point appends one JSON line to ``WORKDIR/results.jsonl`` (the file is rewritten
and renamed, so a kill never leaves half a line); the row carries the resolved config and its
fingerprint, the git revision, package versions, seeds, wall time, peak memory and the metrics.
A restarted sweep skips every point whose fingerprint has a row, so after a kill only the
interrupted point runs again. At the end come ``results.md`` (pivot tables like the papers'),
``results.png`` (perplexity against sparsity per method) and ``results.json``.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from experiments import common, sweep_report, sweep_runner

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep configuration (configs/sweeps/).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Resolve and check every point, then stop.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config=configs/sweeps/oneshot_table.py")
    try:
        command_line = common.command_line_fields()
        sweep = common.apply_runlocal(_CONFIG.value, command_line)
        if not sweep.workdir:
            raise ValueError("config.workdir is required (results.jsonl and the reports go there)")
        sweep_report.check_report_config(sweep)
        rows = sweep_runner.run_sweep(sweep, dry_run=_DRY_RUN.value,
                                      command_line=command_line)
    except (TypeError, ValueError, FileNotFoundError) as err:
        raise app.UsageError(str(err)) from None
    if not _DRY_RUN.value:
        print(sweep_report.pivot_markdown(sweep, rows))
        print(f"wrote {sweep.workdir}")


if __name__ == "__main__":
    common.run_main(main)
