"""The training job: train or fine-tune a Llama under a sparsity rule, then evaluate.

Shared by ``experiments.train`` (one run, with orbax checkpoints and resume) and
``experiments.sweep`` (studies). The loop, its checkpoints and its batches are the library's
(``jaxprune.training.Trainer``, ``train_with_checkpoints``); this module turns the config into
its settings (``TrainSettings.from_config``) and rule (``training.registry``).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
from flax import nnx

from experiments import common
from jaxprune import models, training

# Fields of config.train that say where the text comes from; the others are TrainSettings.
TEXT_FIELDS = ("source", "path", "split")


def check_config(config) -> None:
    """Checks the training config before anything is loaded.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    common.check_eval_config(config)
    check_train_section(config.train)
    make_rule(config)  # the registry names the rule; the rule checks its own fields


def check_train_section(t) -> None:
    """A config's ``train`` section: its text and ``TrainSettings`` fields.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    common.check_text_config("train", t)
    common.check_int_fields("train", t, {"steps": 1, "batch_size": 1, "seq_len": 2,
                                         "checkpoint_every": 1, "log_every": 1})
    if not t.learning_rate > 0:
        raise ValueError(f"config.train.learning_rate must be > 0, got {t.learning_rate!r}")
    if not 0 <= t.warmup_steps < t.steps:
        raise ValueError(f"config.train.warmup_steps must be in [0, config.train.steps), got "
                         f"{t.warmup_steps!r}")


def make_rule(config):
    """The ``MaskRule`` named by ``config.rule`` (None for "dense"), from the registry.

    Raises:
      ValueError: for an unknown rule or settings it refuses, naming the config fields.
    """
    return training.rule_from_config(config.rule, config.sparsity)


def train_settings(config) -> training.TrainSettings:
    """The library's training settings from ``config.train`` and ``config.seed``."""
    return training.TrainSettings.from_config(config.train, config.seed)


def initial_model(config, resources: common.Resources):
    """A fresh model: random (seeded by ``config.seed``) for a ``RANDOM_MODELS`` name,
    otherwise the loaded checkpoint (fine-tuning)."""
    if config.model in models.RANDOM_MODELS:
        dtype = common.PARAM_DTYPES[config.param_dtype]
        return models.Llama(models.RANDOM_MODELS[config.model], rngs=nnx.Rngs(config.seed),
                            param_dtype=dtype)
    return resources.model(config)[0]


def make_trainer(config, resources: common.Resources, *, model=None, teacher=None,
                 temperature: float = 1.0) -> training.Trainer:
    """The library's ``Trainer`` for ``config``: its text, settings and rule; the model is
    ``initial_model(config)`` unless given."""
    model = initial_model(config, resources) if model is None else model
    return training.Trainer(model, resources.text_tokens(config, config.train),
                            train_settings(config), rule=make_rule(config), teacher=teacher,
                            temperature=temperature,
                            bos_id=resources.model(config)[1].sequence_start)


def check_rule_fits_model(config, model) -> None:
    """Traces the rule's mask initialisation and update on the model's shapes (no compute), so
    a pattern that does not fit a kernel (N:M with an input size M does not divide, say)
    fails here rather than inside the jitted training step.

    Raises:
      ValueError: naming the config fields, the parameter and its shape.
    """
    rule = make_rule(config)
    if rule is None:
        return
    params = nnx.state(model, nnx.Param)
    key = jax.random.PRNGKey(0)

    def first_update(p):
        return rule.update_masks(rule.init_masks(p, key), p, p, jnp.asarray(0, jnp.int32), key)

    try:
        jax.eval_shape(first_update, params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.sparsity.pattern={config.sparsity.pattern!r} (rule "
                         f"{config.rule!r}) does not fit config.model={config.model!r}: {err}"
                         ) from None


def prepare(config, resources: common.Resources) -> None:
    """Loads what the job needs and checks the rule against the model and the texts' lengths,
    before any training."""
    check_config(config)
    common.check_zeroshot_data(config.eval.zeroshot)  # before the model loads
    check_rule_fits_model(config, resources.model(config)[0])  # same shapes as the trained one
    tokens = resources.text_tokens(config, config.train)
    if tokens.size < config.train.seq_len + 2:
        raise ValueError(f"config.train: the training text has {tokens.size} tokens, fewer than "
                         f"config.train.seq_len + 2 = {config.train.seq_len + 2}")
    resources.evaluation_tokens(config)


def evaluate(trainer: training.Trainer, config, resources: common.Resources,
             keep_dir: str = "") -> dict:
    """Perplexity of the trained model by ``config.eval``, its measured sparsity and its
    zero-shot figures (``config.eval.zeroshot``; finished tasks kept in ``keep_dir``, a
    folder owned by this config, for a resumed run)."""
    model = trainer.model()
    result = common.evaluate(model, resources.evaluation_tokens(config), config.eval,
                             resources.model(config)[1])
    return {"perplexity": result.perplexity, "mean_nll": result.mean_nll,
            "sparsity": trainer.sparsity(),
            **common.zeroshot_metrics(model, resources.model(config)[1], config.eval.zeroshot,
                                      keep_dir=keep_dir)}


def run_point(config, resources: common.Resources, *, keep_dir: str = "") -> dict:
    """Trains from scratch (no checkpoints) and evaluates; the sweep's entry point
    (``keep_dir``: as ``evaluate``'s)."""
    start = time.perf_counter()
    trainer = make_trainer(config, resources)
    logged = trainer.run(until=config.train.steps)
    train_seconds = time.perf_counter() - start
    metrics = {"method": config.rule, "setting": f"{config.sparsity.final:.0%}"
               if config.rule != "dense" else "dense",
               "final_loss": logged[-1][1], **evaluate(trainer, config, resources, keep_dir),
               "params_sha256": training.params_fingerprint(trainer.state["params"])}
    return {"metrics": metrics, "timings": {"train_seconds": train_seconds,
                                            "eval_seconds": time.perf_counter() - start -
                                            train_seconds},
            "curve": logged}


def run_with_checkpoints(trainer: training.Trainer, workdir: str) -> list:
    """Trains with orbax checkpoints in ``WORKDIR/checkpoints`` (none without a workdir).

    The caller must have claimed ``workdir`` for this config (``common.claimed_workdir``):
    the checkpoints there are taken to be this config's.
    """
    return training.train_with_checkpoints(
        trainer, os.path.join(workdir, "checkpoints") if workdir else "")


def checkpoint_bytes(config, resources: common.Resources) -> int:
    """Disk the training checkpoints take at most: two kept and one being written, each the
    parameters plus AdamW's two moments (masks and counters are small beside them)."""
    params = resources.model(config)[0].config.num_params()
    return 3 * 3 * params * jnp.dtype(common.PARAM_DTYPES[config.param_dtype]).itemsize


def workdir_bytes(config, resources: common.Resources) -> int:
    """Free space the training binary needs in its work directory."""
    return checkpoint_bytes(config, resources)


def loss_curve_png(logged: list, title: str) -> bytes:
    """A PNG of the logged training loss against the step."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    axes.plot([s for s, _ in logged], [v for _, v in logged])
    axes.set_xlabel("step")
    axes.set_ylabel("training loss (mean NLL)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
