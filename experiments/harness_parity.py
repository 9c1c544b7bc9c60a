r"""Parity of jaxprune's zero-shot tasks with lm-evaluation-harness 0.4.13's own task code, on
every document.

  python -m experiments.harness_parity --config=configs/harness_parity.py \
      --config.out=runs/harness_parity.json
  python -m experiments.harness_parity --config=configs/harness_parity.py:runlocal

The harness builds its requests from its task YAML (prompts, target delimiters, HellaSwag's
preprocessing, WinoGrande's partial scoring, its metrics) over jaxprune's offline documents
(``jaxprune.eval.harness.offline_tasks``) and scores them through ``JaxpruneLM``; jaxprune
builds its own requests (``jaxprune.eval.evaluate_task``). Both score with the same model, so
any difference in a prompt or a split shows as a different log-likelihood. By default the
model is a small random Llama over SmolLM2's tokenizer (the tokens, and so every split, are
SmolLM2's; a forward pass costs little), ``--config.random_model=False`` uses SmolLM2 itself.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
from absl import app
from flax import nnx
from ml_collections import config_flags

from experiments import common
from jaxprune import models
from jaxprune.eval import tasks, zeroshot

_CONFIG = config_flags.DEFINE_config_file("config", "configs/harness_parity.py",
                                          "Parity configuration.")
COLUMNS = ["task", "docs", "requests", "max ll diff", "same acc", "same acc_norm",
           "jaxprune acc", "harness acc"]


def parity_model(config):
    """The model both paths score with, and the tokenizer of ``config.model``."""
    model, tokenizer = models.load(config.model)
    if config.random_model:
        shape = models.LlamaConfig(vocab_size=model.config.vocab_size, hidden_size=16,
                                   num_layers=2, num_heads=2, num_kv_heads=1,
                                   intermediate_size=32, head_dim=8)
        model = models.Llama(shape, rngs=nnx.Rngs(config.seed))
    return model, tokenizer


def compare(name: str, ours: zeroshot.TaskResult, theirs: list[dict], results: dict) -> dict:
    """One row: how the harness's samples and task figures match jaxprune's."""
    pairs = list(zip(ours.documents, theirs, strict=True))
    diffs = [abs(a - b) for row, sample in pairs
             for a, (b, _) in zip(row["loglikelihoods"], sample["filtered_resps"], strict=True)]
    same = {m: float(np.mean([row[m] == sample[m] for row, sample in pairs]))
            for m in ("acc", "acc_norm") if m in ours.metrics}
    return {"task": name, "docs": ours.num_docs, "requests": len(diffs),
            "max ll diff": max(diffs), "same acc": same["acc"],
            "same acc_norm": same.get("acc_norm", ""), "jaxprune acc": ours.metrics["acc"],
            "harness acc": results[name]["acc,none"]}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
    with common.usage_errors():
        names = common.zeroshot_task_names(config)
        zeroshot.check_request(names, config.limit)
        common.check_int_fields("parity", config, {"batch_size": 1})
    import lm_eval.evaluator

    from jaxprune.eval.harness import JaxpruneLM, offline_tasks

    model, tokenizer = parity_model(config)
    start = time.perf_counter()
    out = lm_eval.evaluator.evaluate(
        JaxpruneLM(model, tokenizer, batch_size=config.batch_size),
        offline_tasks(names, limit=config.limit), bootstrap_iters=0, log_samples=True,
        verbosity="ERROR")
    harness_seconds = time.perf_counter() - start
    rows = []
    for name in names:
        ours = zeroshot.evaluate_task(model, tokenizer, tasks.get_task(name), limit=config.limit,
                                      batch_size=config.batch_size)
        theirs = sorted(out["samples"][name], key=lambda sample: sample["doc_id"])
        rows.append(compare(name, ours, theirs, out["results"]))
    print(common.markdown_table(rows, COLUMNS, {"max ll diff": ".1e"}))
    if config.out:
        common.write_json_atomic(config.out, {
            "config": config.to_dict(), "rows": rows, "harness_seconds": harness_seconds,
            "cpus": os.cpu_count(), "machine": platform.machine()})
        print(f"wrote {config.out}")


if __name__ == "__main__":
    common.run_main(main)
