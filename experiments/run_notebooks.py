r"""Executes the Colab notebooks top to bottom in a fresh kernel and stores their outputs.

  python -m experiments.run_notebooks                      # full mode, every notebook, in place
  python -m experiments.run_notebooks --notebooks=quickstart --small --out_dir=/tmp/nb

Full mode (SmolLM2-135M) produces the outputs committed in colab/; --small runs the tiny
random model the test suite uses. A notebook is written (atomically) only when every cell ran
without error; on an error the cell and its traceback are printed and nothing is written.
"""

from __future__ import annotations

import os
import time

import nbformat
from absl import app, flags, logging
from nbclient.exceptions import CellExecutionError

from experiments import common
from experiments.notebooks import COLAB, NOTEBOOKS, execute

_NOTEBOOKS = flags.DEFINE_list("notebooks", list(NOTEBOOKS), "Notebooks of colab/ to run.")
_SMALL = flags.DEFINE_bool("small", False, "Small mode (tiny random model).")
_OUT_DIR = flags.DEFINE_string("out_dir", "", "Where to write the executed notebooks; colab/ "
                               "itself (in place) when empty.")
_TIMEOUT = flags.DEFINE_integer("timeout", 3600, "Seconds allowed per cell.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = [n for n in _NOTEBOOKS.value if n not in NOTEBOOKS]
    if unknown:
        raise app.UsageError(f"--notebooks: unknown notebook(s) {unknown}; allowed: "
                             f"{list(NOTEBOOKS)}")
    if _TIMEOUT.value < 1:
        raise app.UsageError(f"--timeout must be >= 1, got {_TIMEOUT.value}")
    out_dir = _OUT_DIR.value or COLAB
    for name in _NOTEBOOKS.value:
        start = time.perf_counter()
        logging.info("running %s (%s mode)", name, "small" if _SMALL.value else "full")
        try:
            notebook = execute(name, small=_SMALL.value, timeout=_TIMEOUT.value)
        except CellExecutionError as err:
            raise SystemExit(f"{name}.ipynb failed; nothing written:\n{err}") from None
        path = os.path.join(out_dir, f"{name}.ipynb")
        common.write_text_atomic(path, nbformat.writes(notebook) + "\n")
        print(f"{name}: ran in {time.perf_counter() - start:.0f} s, wrote {path}")


if __name__ == "__main__":
    common.run_main(main)
