"""lm-evaluation-harness 0.4.13's own task code (YAML prompts, request construction, metrics),
run through jaxprune's ``LM`` adapter on jaxprune's offline documents, against jaxprune's own
tasks and scorer on the same documents; and the adapter's rolling log-likelihood against a
float64 reference written from the harness's window definition."""

import numpy as np
import pytest

from jaxprune import models
from jaxprune.eval import tasks, zeroshot
from tests import lazy

evaluator = lazy.LazyModule("lm_eval.evaluator")
instance = lazy.LazyModule("lm_eval.api.instance")
harness = lazy.LazyModule("jaxprune.eval.harness")  # imports lm-eval

DOCS = 2  # per task: the slice CI runs (experiments/harness_parity.py runs every document)


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny-llama")


@pytest.fixture(scope="module")
def harness_samples(tiny):
    model, tokenizer = tiny
    lm = harness.JaxpruneLM(model, tokenizer, batch_size=4, progress=False)
    out = evaluator.evaluate(lm, harness.offline_tasks(sorted(tasks.TASKS), limit=DOCS),
                                     bootstrap_iters=0, log_samples=True, verbosity="ERROR")
    return out["samples"], out["results"]


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_the_harness_tasks_score_as_jaxprune_does(name, tiny, harness_samples):
    """Any difference in a prompt, a target delimiter or where a request is split changes a
    log-likelihood; the harness's per-document metrics and task means must match too."""
    model, tokenizer = tiny
    task = tasks.get_task(name)
    ours = zeroshot.evaluate_task(model, tokenizer, task, limit=DOCS, batch_size=4,
                                  progress=False)
    samples, results = harness_samples
    theirs = sorted(samples[name], key=lambda sample: sample["doc_id"])
    assert len(theirs) == len(ours.documents) == DOCS
    for sample, row in zip(theirs, ours.documents, strict=True):
        lls = [ll for ll, _ in sample["filtered_resps"]]
        np.testing.assert_allclose(row["loglikelihoods"], lls, rtol=1e-5, atol=1e-4)
        assert [greedy for _, greedy in sample["filtered_resps"]] == row["is_greedy"]
        for metric in task.metrics:
            assert row[metric] == pytest.approx(sample[metric], rel=1e-5, abs=1e-4), metric
    for metric in task.metrics:
        assert ours.metrics[metric] == pytest.approx(results[name][f"{metric},none"],
                                                     rel=1e-5), metric


def test_documents_convert_to_the_hub_columns_the_harness_reads():
    arc = harness.hub_rows("arc_challenge", limit=1)[0]
    assert arc["choices"]["label"][:2] == ["A", "B"] and arc["answerKey"] in arc["choices"][
        "label"]
    assert not arc["question"].startswith("Question:")
    assert set(harness.hub_rows("boolq", limit=1)[0]) == {"passage", "question", "label"}
    lambada = harness.hub_rows("lambada_openai", limit=1)[0]
    assert lambada["text"].endswith("I don't care about signs")
    with pytest.raises(ValueError, match="unknown zero-shot task 'mmlu'"):
        harness.offline_tasks(["rte", "mmlu"])
    with pytest.raises(ValueError, match="limit must be a positive integer or None, got 0"):
        harness.offline_tasks(["rte"], limit=0)


def reference_rolling(model, tokens, prefix, max_length):
    """The harness's disjoint windows, written out: the first ``max_length`` tokens follow the
    prefix token; every later chunk of up to ``max_length`` tokens is predicted from a window
    of ``max_length`` inputs ending just before its last token, so a full chunk follows the one
    token before it and the last, partial chunk follows more (float64 log-softmax over the
    model's full forward)."""
    total, start = 0.0, 0
    while start < len(tokens):
        chunk = tokens[start:start + max_length]
        end = start + len(chunk)
        context = [prefix] if start == 0 else tokens[end - max_length - 1:start]
        inputs = np.asarray(context + chunk[:-1], np.int32)[None]
        logits = np.asarray(model(inputs), np.float64)[0]
        top = logits.max(-1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        total += logp[np.arange(len(chunk)) + len(context) - 1, chunk].sum()
        start += len(chunk)
    return total


def test_rolling_loglikelihood_follows_the_harness_windows(tiny):
    model, byte_tokenizer = tiny
    texts = ["A short text.", "A longer text, " * 6 + "that spans several windows."]
    assert byte_tokenizer.eos_id is None
    with pytest.raises(ValueError, match="end-of-text token, and this tokenizer has none"):
        lm = harness.JaxpruneLM(model, byte_tokenizer, max_length=16, progress=False)
        lm.loglikelihood_rolling([instance.Instance("loglikelihood_rolling", {}, (texts[0],), 0)])
    tokenizer = models.Tokenizer(byte_tokenizer.backend, eos_id=3)
    lm = harness.JaxpruneLM(model, tokenizer, batch_size=2, max_length=16, progress=False)
    got = lm.loglikelihood_rolling([instance.Instance("loglikelihood_rolling", {}, (text,), i)
                                    for i, text in enumerate(texts)])
    for text, total in zip(texts, got, strict=True):
        tokens = [int(t) for t in tokenizer.encode(text)]
        assert total == pytest.approx(reference_rolling(model, tokens, 3, 16), rel=1e-5)
    assert len(tokenizer.encode(texts[1])) > 3 * 16  # several windows, the last one partial
    with pytest.raises(NotImplementedError, match="generate_until tasks are not supported"):
        lm.generate_until([])
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        harness.JaxpruneLM(model, tokenizer, batch_size=0)
