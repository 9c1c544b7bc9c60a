r"""Fine-tuning SmolLM2-135M while gradual magnitude pruning takes it to 50%, to compare with
one-shot Wanda at 50% under the protocol of the one-shot table.

Launch (about an hour on 2 CPU cores):
  python -m experiments.train --config=configs/gradual_smollm2.py \
      --config.train.path=../shared/data/calibration/enwiki-excerpt.txt \
      --config.eval.path=../shared/data/wikitext-2-raw --config.workdir=runs/gradual_smollm2
Smoke run (tiny random model):
  python -m experiments.train --config=configs/gradual_smollm2.py:runlocal

Training text: the Wikipedia calibration text (the one-shot methods calibrate on its first
32,768 tokens; here 160 steps of 4 x 256 tokens at random offsets); evaluation: WikiText-2
raw test, 128 windows of 512 tokens, as in docs/results.md.
"""

from configs.gradual import training_config


def get_config(arg=None):
    """Gradual magnitude to 50% over steps 0..100, 60 more steps at 50%; ``runlocal``."""
    config = training_config("smollm2-135m", "gradual")
    config.sparsity.final = 0.5
    config.sparsity.begin = 0
    config.sparsity.end = 100
    config.sparsity.update_every = 10
    config.train.steps = 160
    config.train.batch_size = 4
    config.train.seq_len = 256
    config.train.learning_rate = 5e-5
    config.train.warmup_steps = 10
    config.train.checkpoint_every = 20
    config.train.log_every = 10
    config.eval.window = 512
    config.runlocal = arg == "runlocal"
    return config
