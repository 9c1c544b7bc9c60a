r"""Zero-shot accuracy of a model on multiple-choice tasks (lm-evaluation-harness protocol).

  python -m experiments.zeroshot --config=configs/zeroshot.py --config.zeroshot.limit=1000 \
      --config.workdir=runs/zeroshot_dense

Each finished task is written to ``<workdir>/tasks/<task>.json`` at once, so a killed run
started again with the same config scores only the tasks it had not finished.
"""

from __future__ import annotations

import os
import platform
import sys

from absl import app
from ml_collections import config_flags

from experiments import common
from jaxprune.eval import zeroshot

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/zeroshot.py", "Zero-shot evaluation configuration."
)
COLUMNS = ["task", "split", "docs", "acc", "acc stderr", "acc_norm", "acc_norm stderr",
           "perplexity", "perplexity stderr", "docs/s"]


def check_config(config) -> None:
    """Checks every field of ``config.zeroshot`` and the model's dtype before any work.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    common.check_param_dtype(config)
    common.check_zeroshot_settings("zeroshot", config.zeroshot, required=True)


def prepare(config, resources: common.Resources) -> None:
    """Reads the tasks' documents and loads the model (``common.job`` calls this before it
    records its claim on the work directory)."""
    common.check_zeroshot_data(config.zeroshot)
    resources.model(config)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with common.job(_CONFIG.value, sys.modules[__name__]) as (config, resources, _):
        model, tokenizer = resources.model(config)
        # The work directory was claimed for this config: tasks kept there are this config's.
        keep_dir = os.path.join(config.workdir, "tasks") if config.workdir else ""
        results = common.zeroshot_results(model, tokenizer, config.zeroshot, keep_dir)
        write_results(config, results)


def write_results(config, results) -> None:
    """Prints the table and (with a workdir) writes zeroshot.json and zeroshot.md."""
    rows = zeroshot.summary_rows(results)
    table = common.markdown_table(rows, COLUMNS, {"docs/s": ".1f"})
    print(table)
    if config.workdir:
        payload = {"config": config.to_dict(), "rows": rows,
                   "documents": {name: r.documents for name, r in results.items()},
                   "machine": platform.machine(), "cpus": os.cpu_count()}
        common.write_json_atomic(os.path.join(config.workdir, "zeroshot.json"), payload)
        common.write_text_atomic(os.path.join(config.workdir, "zeroshot.md"), table + "\n")
        print(f"wrote {config.workdir}")


if __name__ == "__main__":
    common.run_main(main)
