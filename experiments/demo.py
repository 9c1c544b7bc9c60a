r"""`make demo`: one-shot Wanda on SmolLM2-135M, perplexity before and after.

  python -m experiments.demo --config=configs/demo.py [--config.sparsity=0.6]
"""

from __future__ import annotations

import time

from absl import app
from ml_collections import config_flags

from experiments import common
from jaxprune import oneshot
from jaxprune.eval import greedy_generate

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Demo configuration.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
    try:
        settings = oneshot.settings_from_config(config)
        common.check_eval_config(config)
        if not isinstance(config.max_new_tokens, int) or config.max_new_tokens < 1:
            raise ValueError(f"config.max_new_tokens must be a positive integer, got "
                             f"{config.max_new_tokens!r}")
        model, tokenizer = common.load_model(config)
        segments = common.calibration_segments(config.calibration, tokenizer)
        oneshot.plan_oneshot(model, segments, settings)
    except (TypeError, ValueError) as err:
        raise app.UsageError(str(err)) from None
    print(f"{config.model}: {model.config.num_params() / 1e6:.1f}M parameters, "
          f"{model.config.num_layers} blocks")
    eval_tokens = common.evaluation_tokens(config.eval, tokenizer)

    def report(name, net):
        result = common.evaluate(net, eval_tokens, config.eval, tokenizer)
        completion = greedy_generate(net, tokenizer, config.prompt,
                                     max_new_tokens=config.max_new_tokens)
        print(f"{name}: perplexity {result.perplexity:.3f} on {config.eval.source}:"
              f"{config.eval.split} ({result.num_windows} windows of {result.window} tokens); "
              f"greedy: {completion!r}")

    report("dense", model)
    start = time.perf_counter()
    result = oneshot.prune_oneshot(model, segments, settings)
    print(f"{config.method} {config.pattern} on {len(segments)} x {segments.shape[1]} "
          f"calibration tokens: sparsity {oneshot.achieved_sparsity(result):.3f} of the "
          f"linear layers in {time.perf_counter() - start:.1f} s")
    report(f"{config.method} {config.sparsity:.0%}", result.model)


if __name__ == "__main__":
    common.run_main(main)
