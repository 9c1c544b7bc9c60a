r"""Dense perplexity of a model on a named text source, by the SparseGPT/Wanda protocol.

  python -m experiments.perplexity --config=configs/perplexity.py \
      --config.eval.path=../shared/data/wikitext-2-raw
"""

from __future__ import annotations

import os
import platform

from absl import app
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/perplexity.py", "Perplexity configuration."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = common.apply_runlocal(_CONFIG.value, common.command_line_fields())
        common.check_eval_config(config)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    with common.claimed_workdir(config) as commit:
        with common.usage_errors():
            model, tokenizer = common.load_model(config)
            commit()
        write_perplexity(config, model, tokenizer)


def write_perplexity(config, model, tokenizer) -> None:
    """Evaluates, prints the row and (with a workdir) writes perplexity.json."""
    tokens = common.evaluation_tokens(config.eval, tokenizer)
    result = common.evaluate(model, tokens, config.eval, tokenizer)
    row = {
        "model": config.model,
        "dtype": config.param_dtype,
        "text": f"{config.eval.source}:{config.eval.split}",
        "windows": result.num_windows,
        "window": result.window,
        "perplexity": result.perplexity,
        "tokens/s": round(result.tokens_per_second),
    }
    print(common.markdown_table([row], list(row)))
    if config.workdir:
        path = os.path.join(config.workdir, "perplexity.json")
        common.write_json_atomic(path, {"config": config.to_dict(), "result": row,
                                        "machine": platform.machine(),
                                        "cpus": os.cpu_count()})
        print(f"wrote {path}")


if __name__ == "__main__":
    common.run_main(main)
