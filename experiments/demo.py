r"""`make demo`: load SmolLM2-135M, print its dense perplexity and a greedy completion.

  python -m experiments.demo --config=configs/demo.py [--config.eval.max_windows=32]
"""

from __future__ import annotations

import time

from absl import app, logging
from ml_collections import config_flags

from experiments import common
from jaxprune.eval import greedy_generate, perplexity

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Demo configuration.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    try:
        common.check_eval_config(config)
        if not isinstance(config.max_new_tokens, int) or config.max_new_tokens < 1:
            raise ValueError(f"config.max_new_tokens must be a positive integer, got "
                             f"{config.max_new_tokens!r}")
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    start = time.perf_counter()
    model, tokenizer = common.load_model(config)
    logging.info("loaded %s in %.1f s", config.model, time.perf_counter() - start)
    n_params = model.config.num_params()
    print(f"{config.model}: {n_params / 1e6:.1f}M parameters, {model.config.num_layers} blocks")
    tokens = common.evaluation_tokens(config.eval, tokenizer)
    result = perplexity(model, tokens, window=config.eval.window,
                        batch_size=config.eval.batch_size, max_windows=config.eval.max_windows)
    print(f"dense perplexity on {config.eval.source}:{config.eval.split} "
          f"({result.num_windows} windows of {result.window} tokens): {result.perplexity:.3f} "
          f"({result.tokens_per_second:.0f} tokens/s)")
    completion = greedy_generate(model, tokenizer, config.prompt,
                                 max_new_tokens=config.max_new_tokens)
    print(f"greedy completion: {completion!r}")


if __name__ == "__main__":
    app.run(main)
