"""Zero-shot accuracy of a model on multiple-choice tasks, by the harness's definitions.

For one document with choice log-likelihoods ``ll``: ``acc`` is 1 when ``argmax(ll)`` is the
gold index, ``acc_norm`` when ``argmax(ll / len(choice))`` is (lengths in characters of the
choice strings); ``argmax`` takes the first of equal values, as NumPy's does. A task's figure
is the mean over documents, with the standard error of that mean (sample standard deviation
over sqrt(n)), which is what lm-evaluation-harness reports for a mean.

References:
  Gao et al., "The Language Model Evaluation Harness", EleutherAI, v0.4 (2024):
  ``ConfigurableTask.process_results`` for multiple choice, ``metrics.mean_stderr``.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from jaxprune.eval import loglikelihood
from jaxprune.eval.tasks import Document, Task, check_limit, get_task, task_documents


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """One task's outcome.

    Attributes:
      name, split, source: the task (``jaxprune.eval.tasks.Task``).
      num_docs: documents scored.
      metrics: ``{"acc": ..., "acc_norm": ...}`` (the task's metrics), means over documents.
      stderr: the standard error of each mean.
      documents: per document, ``{"gold", "loglikelihoods", "is_greedy", "acc"[, "acc_norm"]}``.
      seconds: wall time of the scoring.
    """

    name: str
    split: str
    source: str
    num_docs: int
    metrics: dict[str, float]
    stderr: dict[str, float]
    documents: list[dict]
    seconds: float


def document_metrics(doc: Document, lls: list[float], metrics: tuple[str, ...]) -> dict:
    """``acc`` and, when asked, ``acc_norm`` of one document from its choices' scores."""
    lls = np.asarray(lls, np.float64)
    out = {"acc": float(int(np.argmax(lls)) == doc.gold)}
    if "acc_norm" in metrics:
        lengths = np.asarray([float(len(choice)) for choice in doc.choices])
        out["acc_norm"] = float(int(np.argmax(lls / lengths)) == doc.gold)
    return out


def mean_stderr(values: list[float]) -> float:
    """Standard error of the mean: sample standard deviation / sqrt(n) (nan for n < 2)."""
    if len(values) < 2:
        return float("nan")
    return float(np.std(np.asarray(values, np.float64), ddof=1) / math.sqrt(len(values)))


def evaluate_task(model, tokenizer, task: Task, *, limit: int | None = None,
                  batch_size: int = 8, max_length: int = 2048,
                  progress: bool = True) -> TaskResult:
    """Scores every choice of the task's first ``limit`` documents and reports its metrics.

    Args:
      model: a jaxprune decoder (see ``loglikelihood.score_requests``).
      tokenizer: the model's ``jaxprune.models.Tokenizer``.
      task: a ``Task`` (``get_task(name)``).
      limit: the first documents only (``None``: the whole split).
      batch_size, max_length: as ``score_requests`` takes them.
      progress: show a progress bar.

    Returns:
      A ``TaskResult``.

    Raises:
      ValueError: for a bad limit, batch size or length (before any model work), a request
        whose continuation has no tokens, or a non-finite log-likelihood.
    """
    documents = task_documents(task, limit)
    pairs = [loglikelihood.encode_request(tokenizer, request)
             for doc in documents for request in doc.requests]
    start = time.perf_counter()
    scores = iter(loglikelihood.score_requests(model, pairs, batch_size=batch_size,
                                               max_length=max_length, progress=progress))
    rows = []
    for doc in documents:
        choice_scores = [next(scores) for _ in doc.requests]
        lls = [s.loglikelihood for s in choice_scores]
        rows.append({"gold": doc.gold, "loglikelihoods": lls,
                     "is_greedy": [s.is_greedy for s in choice_scores],
                     **document_metrics(doc, lls, task.metrics)})
    seconds = time.perf_counter() - start
    metrics = {m: float(np.mean([r[m] for r in rows])) for m in task.metrics}
    stderr = {m: mean_stderr([r[m] for r in rows]) for m in task.metrics}
    return TaskResult(task.name, task.split, task.source, len(rows), metrics, stderr, rows,
                      seconds)


def check_request(task_names, limit) -> list[Task]:
    """The named tasks, after checking the names and ``limit``.

    Raises:
      ValueError: for an unknown task (listing the known ones), no task, a repeated task, or
        a ``limit`` that is not a positive integer or ``None``.
    """
    if not task_names:
        raise ValueError("no task named; choose among the known tasks")
    repeated = sorted({name for name in task_names if list(task_names).count(name) > 1})
    if repeated:
        raise ValueError(f"tasks named twice: {repeated}")
    tasks = [get_task(name) for name in task_names]
    check_limit(limit)
    return tasks


def summary_rows(results: dict[str, TaskResult]) -> list[dict]:
    """One row per task (``acc``, ``acc_norm`` where the task has it, standard errors, docs/s)
    and a last row with the mean ``acc`` over the tasks."""
    rows = []
    for result in results.values():
        row = {"task": result.name, "split": result.split, "docs": result.num_docs,
               "docs/s": result.num_docs / result.seconds if result.seconds else float("nan")}
        for metric in ("acc", "acc_norm"):
            row[metric] = result.metrics.get(metric, "")
            row[f"{metric} stderr"] = result.stderr.get(metric, "")
        rows.append(row)
    mean = float(np.mean([r.metrics["acc"] for r in results.values()]))
    docs, seconds = sum(r["docs"] for r in rows), sum(r.seconds for r in results.values())
    rows.append({"task": "mean", "split": "", "docs": docs, "acc": mean, "acc stderr": "",
                 "acc_norm": "", "acc_norm stderr": "",
                 "docs/s": docs / seconds if seconds else float("nan")})
    return rows


def evaluate_zeroshot(model, tokenizer, task_names: list[str] | tuple[str, ...], *,
                      limit: int | None = None, batch_size: int = 8, max_length: int = 2048,
                      progress: bool = True) -> dict[str, TaskResult]:
    """``evaluate_task`` for each named task, every name checked before any work.

    Raises:
      ValueError: for an unknown task (listing the known ones), an empty list, or a bad limit.
    """
    tasks = check_request(task_names, limit)
    return {task.name: evaluate_task(model, tokenizer, task, limit=limit, batch_size=batch_size,
                                     max_length=max_length, progress=progress)
            for task in tasks}
