"""Zero-shot accuracy of a model on the harness's tasks, by the harness's definitions.

Multiple choice, for one document with choice log-likelihoods ``ll``: ``acc`` is 1 when
``argmax(ll)`` is the gold index, ``acc_norm`` when ``argmax(ll / len(choice))`` is (lengths in
characters of the choice strings); ``argmax`` takes the first of equal values, as NumPy's
does. Next-word prediction (LAMBADA): ``acc`` is 1 when greedy decoding produces the word, and
the task's ``perplexity`` is ``exp(-mean(ll))`` over documents. A mean's standard error is the
sample standard deviation over sqrt(n), which is what lm-evaluation-harness reports for a mean;
perplexity's is the delta method's, perplexity times the standard error of the mean ``ll``
(the harness bootstraps it).

References:
  Gao et al., "The Language Model Evaluation Harness", EleutherAI, v0.4 (2024):
  ``ConfigurableTask.process_results`` for multiple choice, ``metrics.mean_stderr``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np
from absl import logging

from jaxprune import workdir
from jaxprune.eval import loglikelihood
from jaxprune.eval.tasks import (
    PAPER_TASKS,
    Document,
    Task,
    check_limit,
    get_task,
    task_documents,
)


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """One task's outcome.

    Attributes:
      name, split, source: the task (``jaxprune.eval.tasks.Task``).
      num_docs: documents scored.
      metrics: the task's metrics (``aggregate``): ``{"acc": ..., "acc_norm": ...}`` or
        ``{"acc": ..., "perplexity": ...}``.
      stderr: the standard error of each.
      documents: per document, ``{"gold", "loglikelihoods", "is_greedy"}`` and its
        ``document_metrics``.
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


def document_metrics(doc: Document, scores: list[loglikelihood.Score], task: Task) -> dict:
    """One document's metrics from its requests' scores, as ``task.output_type`` defines them:
    ``acc`` (and ``acc_norm`` when the task has it) for multiple choice; ``acc`` (greedy) and
    the log-likelihood that ``perplexity`` aggregates for next-word prediction."""
    if task.output_type == "loglikelihood":
        # The harness's per-document "perplexity" is the log-likelihood its aggregation
        # turns into exp(-mean).
        (score,) = scores
        return {"acc": float(score.is_greedy), "perplexity": score.loglikelihood}
    lls = np.asarray([s.loglikelihood for s in scores], np.float64)
    out = {"acc": float(int(np.argmax(lls)) == doc.gold)}
    if "acc_norm" in task.metrics:
        lengths = np.asarray([float(len(choice)) for choice in doc.choices])
        out["acc_norm"] = float(int(np.argmax(lls / lengths)) == doc.gold)
    return out


def mean_stderr(values: list[float]) -> float:
    """Standard error of the mean: sample standard deviation / sqrt(n) (nan for n < 2)."""
    if len(values) < 2:
        return float("nan")
    return float(np.std(np.asarray(values, np.float64), ddof=1) / math.sqrt(len(values)))


def aggregate(metric: str, values: list[float]) -> tuple[float, float]:
    """A task's figure for ``metric`` from its per-document values, and its standard error:
    the mean for accuracies, ``exp(-mean)`` of the log-likelihoods for perplexity."""
    if metric == "perplexity":
        value = math.exp(-float(np.mean(values)))
        return value, value * mean_stderr(values)
    return float(np.mean(values)), mean_stderr(values)


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
    groups = [[loglikelihood.encode_request(tokenizer, request) for request in doc.requests]
              for doc in documents]
    start = time.perf_counter()
    scored = loglikelihood.score_groups(model, groups, batch_size=batch_size,
                                        max_length=max_length, progress=progress)
    rows = []
    for doc, choice_scores in zip(documents, scored, strict=True):
        rows.append({"gold": doc.gold,
                     "loglikelihoods": [s.loglikelihood for s in choice_scores],
                     "is_greedy": [s.is_greedy for s in choice_scores],
                     **document_metrics(doc, choice_scores, task)})
    seconds = time.perf_counter() - start
    figures = {m: aggregate(m, [r[m] for r in rows]) for m in task.metrics}
    metrics = {m: value for m, (value, _) in figures.items()}
    stderr = {m: error for m, (_, error) in figures.items()}
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


SUMMARY_METRICS = ("acc", "acc_norm", "perplexity")


def summary_rows(results: dict[str, TaskResult]) -> list[dict]:
    """One row per task (its metrics with standard errors, docs/s; blank where a task lacks
    a metric) and a last row, ``mean of N``, with the mean ``acc`` over the N paper tasks
    among the results (``tasks.PAPER_TASKS``: the papers' mean), or over all when none is."""
    rows = []
    for result in results.values():
        row = {"task": result.name, "split": result.split, "docs": result.num_docs,
               "docs/s": result.num_docs / result.seconds if result.seconds else float("nan")}
        for metric in SUMMARY_METRICS:
            row[metric] = result.metrics.get(metric, "")
            row[f"{metric} stderr"] = result.stderr.get(metric, "")
        rows.append(row)
    averaged = [r for r in results.values() if r.name in PAPER_TASKS] or list(results.values())
    docs = sum(r.num_docs for r in averaged)
    seconds = sum(r.seconds for r in averaged)
    mean = {"task": f"mean of {len(averaged)}", "split": "", "docs": docs,
            "docs/s": docs / seconds if seconds else float("nan")}
    for metric in SUMMARY_METRICS:
        mean[metric] = mean[f"{metric} stderr"] = ""
    mean["acc"] = float(np.mean([r.metrics["acc"] for r in averaged]))
    rows.append(mean)
    return rows


def evaluate_zeroshot(model, tokenizer, task_names: list[str] | tuple[str, ...], *,
                      limit: int | None = None, batch_size: int = 8, max_length: int = 2048,
                      progress: bool = True, keep_dir: str = "") -> dict[str, TaskResult]:
    """``evaluate_task`` for each named task, every name checked before any work.

    Args:
      model, tokenizer, limit, batch_size, max_length, progress: as ``evaluate_task``.
      task_names: names of ``jaxprune.eval.TASKS``.
      keep_dir: a folder owned by this model and these settings: each finished task is
        written there as ``<task>.json`` at once (atomically), and a task found there, left by
        an interrupted run of the same evaluation, is read back instead of scored again.
        Empty: nothing is kept.

    Returns:
      ``{task name: TaskResult}`` in the order given.

    Raises:
      ValueError: for an unknown task (listing the known ones), an empty list, or a bad limit.
    """
    results = {}
    for task in check_request(task_names, limit):
        path = os.path.join(keep_dir, f"{task.name}.json") if keep_dir else ""
        if path and os.path.isfile(path):
            with open(path) as f:
                results[task.name] = TaskResult(**json.load(f))
            logging.info("%s: kept the result of an earlier run of this config (%s)", task.name,
                         path)
            continue
        results[task.name] = evaluate_task(model, tokenizer, task, limit=limit,
                                           batch_size=batch_size, max_length=max_length,
                                           progress=progress)
        if path:
            workdir.write_atomic(path, json.dumps(dataclasses.asdict(results[task.name])))
    return results
