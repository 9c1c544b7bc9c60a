r"""The paper-style one-shot table: dense, then every method at 50%, 4:8 and 2:4.

  python -m experiments.oneshot_table --workdir=runs/oneshot_table \
      --calibration_path=../shared/data/calibration/enwiki-excerpt.txt \
      --eval_path=../shared/data/wikitext-2-raw

Each row runs ``experiments.prune`` in its own process (so that its peak memory is its own) with
the protocol of configs/*.py, writing ``WORKDIR/ROW/results.json``; a row whose file exists is
not run again, so an interrupted table resumes. The table is written as results.md and
results.json in the workdir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags, logging

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (required).")
_CALIBRATION = flags.DEFINE_string("calibration_path", None, "Calibration text file.")
_EVAL = flags.DEFINE_string("eval_path", None, "WikiText-2 raw directory.")
_METHODS = flags.DEFINE_list("methods", ["magnitude", "obd", "wanda", "sparsegpt"], "Methods.")
_PATTERNS = flags.DEFINE_list("patterns", ["unstructured", "4:8", "2:4"],
                              "Patterns; 'unstructured' uses each method's config group.")
_RUNLOCAL = flags.DEFINE_bool("runlocal", False, "Smoke run on built-in text.")

COLUMNS = ["method", "pattern", "sparsity", "perplexity", "prune seconds", "peak memory MB"]


def run_row(name: str, module: str, config: str, overrides: list[str],
            filename: str = "results.json") -> dict:
    """Runs one row in a subprocess unless its output file exists; returns its row."""
    workdir = os.path.join(_WORKDIR.value, name)
    path = os.path.join(workdir, filename)
    if not os.path.isfile(path):
        logging.info("running %s", name)
        command = [sys.executable, "-m", module, f"--config={config}",
                   f"--config.workdir={workdir}", *overrides]
        subprocess.run(command, check=True)
    with open(path) as f:
        payload = json.load(f)
    return payload["rows"][-1] if "rows" in payload else payload["result"]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    suffix = ":runlocal" if _RUNLOCAL.value else ""
    data_flags = []
    if not _RUNLOCAL.value:
        if not (_CALIBRATION.value and _EVAL.value):
            raise app.UsageError("--calibration_path and --eval_path are required (or --runlocal)")
        data_flags = [f"--config.calibration.path={_CALIBRATION.value}",
                      f"--config.eval.path={_EVAL.value}"]
    for method in _METHODS.value:
        if not os.path.isfile(os.path.join("configs", f"{method}.py")):
            raise app.UsageError(f"--methods has {method!r}, which has no configs/{method}.py")

    dense = run_row("dense", "experiments.perplexity", f"configs/perplexity.py{suffix}",
                    data_flags[1:], filename="perplexity.json")
    rows = [{"method": "dense", "pattern": "-", "sparsity": 0.0,
             "perplexity": dense["perplexity"], "prune seconds": 0.0, "peak memory MB": "-"}]
    for method in _METHODS.value:
        for pattern in _PATTERNS.value:
            overrides = list(data_flags)
            if pattern != "unstructured":
                overrides.append(f"--config.pattern={pattern}")
            row = run_row(f"{method}_{pattern.replace(':', 'of')}", "experiments.prune",
                          f"configs/{method}.py{suffix}", overrides)
            rows.append({**row, "pattern": pattern if pattern != "unstructured"
                         else f"50% ({row['pattern']})"})
    table = common.markdown_table(rows, COLUMNS, {"prune seconds": ".1f"})
    print(table)
    common.write_text_atomic(os.path.join(_WORKDIR.value, "results.md"), table + "\n")
    common.write_json_atomic(os.path.join(_WORKDIR.value, "results.json"), {"rows": rows})


if __name__ == "__main__":
    app.run(main)
