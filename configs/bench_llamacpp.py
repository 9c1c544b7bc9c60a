r"""Benchmark: exported GGUF models in llama.cpp (llama-cpp-python): perplexity on the protocol's
WikiText-2 windows (jaxprune's tokens, so the figures compare with docs/results.md) and greedy
decoding tokens/s, one row per model (experiments/bench_llamacpp.py).

Launch (the GGUFs written by the prune and compress jobs' --config.save_gguf):
  python -m experiments.bench_llamacpp --config=configs/bench_llamacpp.py \
      --config.models=dense=runs/gguf/dense/model.gguf,2:4=runs/gguf/sparsegpt_2of4/model.gguf \
      --config.eval.path=../shared/data/wikitext-2-raw --config.out=runs/bench_llamacpp.json
llama-cpp-python compiles llama.cpp at install; it is not in the project's extras: `make
llamacpp` installs it (24 minutes on the 2-core machine beside other work).
Smoke run (two windows of 128 tokens, 8 decoded tokens):
  python -m experiments.bench_llamacpp --config=configs/bench_llamacpp.py:runlocal \
      --config.models=dense=PATH.gguf
"""

import ml_collections


def get_config(arg=None):
    """The benchmark; ``arg="runlocal"`` shrinks it to a smoke run."""
    config = ml_collections.ConfigDict()
    config.models = ""  # comma-separated label=path.gguf
    config.tokenizer_model = "smollm2-135m"  # jaxprune tokenizes the text: same tokens
    config.eval = ml_collections.ConfigDict(dict(
        source="wikitext2", path="", split="test", window=512, max_windows=128))
    config.prompt_tokens = 32  # the decode prompt: the first tokens of the text
    config.decode_tokens = 128  # greedy tokens generated and timed after the prompt
    config.decode_repeats = 5  # decoding runs; the row gives their median rate
    config.threads = 2
    config.out = ""  # JSON output path, written atomically
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (("eval.window", 128), ("eval.max_windows", 2),
                                 ("decode_tokens", 8), ("decode_repeats", 1))
    return config
