r"""Benchmark: zero-shot scoring by jaxprune against lm-evaluation-harness's Hugging Face
backend, on the same documents of the same model on the same CPU, one run side by side.

  python -m experiments.bench_zeroshot --config=configs/bench_zeroshot.py \
      --config.out=runs/bench_zeroshot.json
  python -m experiments.bench_zeroshot --config=configs/bench_zeroshot.py:runlocal

jaxprune scores each task with ``jaxprune.eval.evaluate_task``; the harness (0.4.13) runs its
own task code (``jaxprune.eval.harness.offline_tasks``) with ``HFLM`` over transformers'
SmolLM2 read from the same GGUF, float32. Both timings include everything after the models are
loaded (jaxprune's compilations too). Throughput is counted in request tokens, the tokens the
harness's requests put through a model (``len(context + continuation) - 1`` each), the same
count for both engines; jaxprune computes fewer, since it scores a shared context once. The
table also compares every request's log-likelihood (largest difference relative to
``max(1, |ll|)``) and every document's choice.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
from absl import app
from ml_collections import config_flags

from experiments import common
from jaxprune import models
from jaxprune.eval import loglikelihood, tasks, zeroshot

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bench_zeroshot.py",
                                          "Benchmark configuration.")
COLUMNS = ["task", "docs", "request tokens", "jaxprune s", "harness HF s", "speed-up",
           "max ll diff", "same acc choice", "jaxprune acc", "harness acc"]


def harness_hf_samples(hf_model, hf_tokenizer, names, *, limit=None, samples=None,
                       batch_size=8) -> dict[str, list[dict]]:
    """lm-evaluation-harness's HF backend on its own tasks over jaxprune's offline documents.

    Args:
      hf_model, hf_tokenizer: a transformers causal LM and its tokenizer.
      names: task names.
      limit: the first documents of each task; ``samples`` picks among them by index.
      batch_size: HFLM's batch size.

    Returns:
      Per task, the harness's logged samples in document order.
    """
    import lm_eval.evaluator
    from lm_eval.models.huggingface import HFLM

    from jaxprune.eval.harness import offline_tasks

    hf = HFLM(pretrained=hf_model, tokenizer=hf_tokenizer, batch_size=batch_size,
              max_length=2048)
    out = lm_eval.evaluator.evaluate(hf, offline_tasks(names, limit=limit), samples=samples,
                                     bootstrap_iters=0, log_samples=True, verbosity="ERROR")
    return {name: sorted(found, key=lambda s: s["doc_id"])
            for name, found in out["samples"].items()}


def request_tokens(tokenizer, task, limit) -> int:
    """The tokens the harness feeds a model for the task's requests (one pass per request)."""
    return sum(len(pair.context) + len(pair.continuation) - 1
               for doc in tasks.task_documents(task, limit) for pair in
               (loglikelihood.encode_request(tokenizer, r) for r in doc.requests))


def compare_task(name, ours: zeroshot.TaskResult, theirs: list[dict], seconds: float,
                 tokens: int) -> dict:
    """One table row: timings, and how the two engines' scores and choices agree."""
    diffs = [abs(a - b) / max(1.0, abs(b))
             for row, sample in zip(ours.documents, theirs, strict=True)
             for a, (b, _) in zip(row["loglikelihoods"], sample["filtered_resps"], strict=True)]
    same = np.mean([row["acc"] == sample["acc"]
                    for row, sample in zip(ours.documents, theirs, strict=True)])
    return {"task": name, "docs": ours.num_docs, "request tokens": tokens,
            "jaxprune s": ours.seconds, "harness HF s": seconds,
            "speed-up": seconds / ours.seconds, "max ll diff": max(diffs),
            "same acc choice": float(same), "jaxprune acc": ours.metrics["acc"],
            "harness acc": float(np.mean([s["acc"] for s in theirs]))}


def load_transformers(gguf_path):
    """transformers' model and tokenizer from the GGUF jaxprune reads, float32, eval mode."""
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    directory, name = os.path.split(gguf_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
    with common.usage_errors():
        names = common.zeroshot_task_names(config)
        zeroshot.check_request(names, config.limit)
        common.check_int_fields("bench", config, {"batch_size": 1, "hf_batch_size": 1})
    gguf_path = models.packaged_model_path(config.model)
    model, tokenizer = models.load_gguf(gguf_path)
    hf_model, hf_tokenizer = load_transformers(gguf_path)
    rows = []
    for name in names:
        task = tasks.get_task(name)
        ours = zeroshot.evaluate_task(model, tokenizer, task, limit=config.limit,
                                      batch_size=config.batch_size)
        start = time.perf_counter()
        theirs = harness_hf_samples(hf_model, hf_tokenizer, [name], limit=config.limit,
                                    batch_size=config.hf_batch_size)[name]
        seconds = time.perf_counter() - start
        rows.append(compare_task(name, ours, theirs, seconds,
                                 request_tokens(tokenizer, task, config.limit)))
        print(common.markdown_table(rows[-1:], COLUMNS))
    report(config, rows)


def report(config, rows: list[dict]) -> None:
    """Prints the table with a total row and writes the JSON of ``config.out``."""
    jax_s, hf_s = sum(r["jaxprune s"] for r in rows), sum(r["harness HF s"] for r in rows)
    tokens = sum(r["request tokens"] for r in rows)
    total = {"task": "all", "docs": sum(r["docs"] for r in rows), "request tokens": tokens,
             "jaxprune s": jax_s, "harness HF s": hf_s, "speed-up": hf_s / jax_s,
             "max ll diff": max(r["max ll diff"] for r in rows),
             "same acc choice": float(np.average([r["same acc choice"] for r in rows],
                                                 weights=[r["docs"] for r in rows])),
             "jaxprune acc": "", "harness acc": ""}
    print(f"\nfirst {config.limit} documents per task, {os.cpu_count()} CPUs "
          f"({platform.machine()}); request tokens/s: jaxprune {tokens / jax_s:.0f}, "
          f"harness HF backend {tokens / hf_s:.0f}")
    print(common.markdown_table(rows + [total], COLUMNS, {"max ll diff": ".1e"}))
    if config.out:
        import jax
        import lm_eval
        import torch
        import transformers

        common.write_json_atomic(config.out, {
            "config": config.to_dict(), "rows": rows, "total": total,
            "request_tokens_per_second": {"jaxprune": tokens / jax_s,
                                          "harness_hf": tokens / hf_s},
            "versions": {"jax": jax.__version__, "lm_eval": lm_eval.__version__,
                         "torch": torch.__version__, "transformers": transformers.__version__},
            "cpus": os.cpu_count(), "machine": platform.machine()})
        print(f"wrote {config.out}")


if __name__ == "__main__":
    common.run_main(main)
