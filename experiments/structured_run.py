"""The structured binary's job, flag-free so that ``experiments.structured`` and
``experiments.compress`` share it: cut, evaluate, distil and quantize as asked, evaluate again,
write results.json, results.md, the loss curve and the export."""

from __future__ import annotations

import os

from absl import logging

from experiments import common, structured_job, train_job


def write_results(config, metrics: dict, outcome: dict, tokenizer) -> None:
    """results.json, results.md, loss.png and (``config.save_hf``) the student's export."""
    table = common.markdown_table([metrics], list(metrics))
    common.write_json_atomic(os.path.join(config.workdir, "results.json"), {
        "config": config.to_dict(), "metrics": metrics, "timings": outcome["timings"],
        "details": outcome["details"], "curve": outcome["curve"],
        "git": common.git_revision(), "packages": common.package_versions()})
    common.write_text_atomic(os.path.join(config.workdir, "results.md"), table + "\n")
    if outcome["curve"]:
        try:
            png = train_job.loss_curve_png(outcome["curve"], f"distillation: {metrics['method']}")
            common.write_bytes_atomic(os.path.join(config.workdir, "loss.png"), png)
        except ImportError:
            logging.warning("matplotlib is not installed (extra 'plots'): no loss.png")
    student, export = outcome["student"], os.path.join(config.workdir, "hf")
    if config.save_hf and not student.config.is_uniform:
        logging.warning("the student's blocks differ in width: no Hugging Face export")
    elif config.save_hf and os.path.isdir(export):
        # The directory was claimed for this config, and exports are renamed into place
        # complete: what is there is this student.
        logging.info("%s exists already (an earlier run of this config)", export)
    elif config.save_hf:
        from jaxprune import models

        models.save_hf_dir(student, export, tokenizer=tokenizer)
    gguf = os.path.join(config.workdir, "model.gguf")
    if config.get("save_gguf") and not os.path.exists(gguf):
        from jaxprune.models import gguf_export

        gguf_export.save_gguf(student, gguf, tokenizer=tokenizer,
                              tensor_type=config.save_gguf)



def run_structured(config_value) -> None:
    """The structured binary's job on a config: cut, evaluate, distil, quantize as asked,
    evaluate, write the results."""
    with common.job(config_value, structured_job) as (config, resources, _):
        # The point first: it stops right after the cut when the student's shapes do not fit
        # config.quant_settings.
        outcome = structured_job.run_point(config, resources, workdir=config.workdir,
                                           keep_dir=config.workdir)
        teacher, tokenizer = resources.model(config)
        dense = common.evaluate(teacher, resources.evaluation_tokens(config), config.eval,
                                tokenizer)
        metrics = {**outcome["metrics"], "dense_perplexity": dense.perplexity,
                   "dense_tokens_per_second": dense.tokens_per_second}
        print(common.markdown_table([metrics], list(metrics)))
        if config.workdir:
            write_results(config, metrics, outcome, resources.model(config)[1])
            print(f"wrote {config.workdir}")

