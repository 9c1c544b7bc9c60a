"""The training job: train or fine-tune a Llama under a sparsity rule, then evaluate.

Shared by ``experiments.train`` (one run, with orbax checkpoints and resume) and
``experiments.sweep`` (studies). Everything that decides the numbers is a function of the
config and the step: batch ``t`` is drawn with ``numpy.random.default_rng([seed, t])``, so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from experiments import common
from jaxprune import allocation, models, paths, training
from jaxprune.losses import distillation_kl, next_token_nll

RULES = ("dense", "gradual", "ste", "snip", "set", "rigl")


def check_config(config) -> None:
    """Checks the training config before anything is loaded.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    common.check_eval_config(config)
    t = config.train
    common.check_text_config("train", t)
    common.check_int_fields("train", t, {"steps": 1, "batch_size": 1, "seq_len": 2,
                                         "checkpoint_every": 1, "log_every": 1})
    if not t.learning_rate > 0:
        raise ValueError(f"config.train.learning_rate must be > 0, got {t.learning_rate!r}")
    if not 0 <= t.warmup_steps < t.steps:
        raise ValueError(f"config.train.warmup_steps must be in [0, config.train.steps), got "
                         f"{t.warmup_steps!r}")
    if config.rule not in RULES:
        raise ValueError(f"config.rule must be one of {list(RULES)}, got {config.rule!r}")
    make_rule(config)  # the rule checks its own fields (schedule order, fractions, ...)


def make_rule(config):
    """The ``jaxprune.training`` rule named by ``config.rule`` (None for "dense").

    Raises:
      ValueError: from the rule's own checks, prefixed with the config fields involved.
    """
    s = config.sparsity
    try:
        if config.rule == "dense":
            return None
        if config.rule in ("gradual", "ste"):
            return training.GradualMagnitude(
                final_sparsity=s.final, begin=s.begin, end=s.end, update_every=s.update_every,
                allocation=s.allocation, pattern=s.pattern,
                straight_through=config.rule == "ste")
        if config.rule == "snip":
            return training.Snip(sparsity=s.final, allocation=s.allocation, pattern=s.pattern)
        rule_class = training.SET if config.rule == "set" else training.RigL
        return rule_class(sparsity=s.final, update_every=s.update_every, end=s.end,
                          drop_fraction=s.drop_fraction, allocation=s.allocation)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.sparsity (rule {config.rule!r}): {err}") from None


def initial_model(config, resources: common.Resources):
    """A fresh model: random (seeded by ``config.seed``) for a ``RANDOM_MODELS`` name,
    otherwise the loaded checkpoint (fine-tuning)."""
    if config.model in models.RANDOM_MODELS:
        dtype = common.PARAM_DTYPES[config.param_dtype]
        model = models.Llama(models.RANDOM_MODELS[config.model], rngs=nnx.Rngs(config.seed),
                             param_dtype=dtype)
        return model
    return nnx.clone(resources.model(config)[0])


def batch_at(tokens: np.ndarray, step: int, batch_size: int, seq_len: int,
             seed: int) -> np.ndarray:
    """Batch ``step``: ``batch_size`` windows of ``seq_len + 1`` tokens at seeded offsets."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, tokens.size - seq_len - 1, size=batch_size)
    return np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int32)


def make_optimizer(config):
    """AdamW with linear warm-up and cosine decay, clipped, wrapped by the sparsity rule."""
    t = config.train
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, t.learning_rate, warmup_steps=max(t.warmup_steps, 1), decay_steps=t.steps,
        end_value=t.learning_rate * t.final_lr_fraction)
    inner = optax.chain(optax.clip_by_global_norm(t.clip_norm),
                        optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=t.weight_decay))
    rule = make_rule(config)
    if rule is None:
        return inner
    return training.sparse_training(inner, rule, key=jax.random.PRNGKey(config.seed))


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
    check_rule_fits_model(config, resources.model(config)[0])  # same shapes as the trained one
    tokens = resources.text_tokens(config, config.train)
    if tokens.size < config.train.seq_len + 2:
        raise ValueError(f"config.train: the training text has {tokens.size} tokens, fewer than "
                         f"config.train.seq_len + 2 = {config.train.seq_len + 2}")
    resources.evaluation_tokens(config)


def params_fingerprint(params) -> str:
    """SHA-256 over every parameter's bytes, in flattening order."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


class Trainer:
    """One training run: model, optimizer and a jitted step over plain pytrees.

    The train state is ``{"params", "opt_state", "step"}``, a pytree that orbax saves. With a
    ``teacher`` the loss is logit distillation (``distillation_kl``) instead of the next-token
    NLL.

    Args:
      config: a training config (configs/gradual.py).
      resources: loaded models and texts.
      model: the model to train (copied); by default ``initial_model(config)``.
      teacher: a model whose logits the student learns to match.
      temperature: the distillation temperature.
    """

    def __init__(self, config, resources: common.Resources, *, model=None, teacher=None,
                 temperature: float = 1.0):
        self.config = config
        model = initial_model(config, resources) if model is None else nnx.clone(model)
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        self.teacher = nnx.split(teacher) if teacher is not None else None
        self.temperature = temperature
        self.tx = make_optimizer(config)
        self.state = {"params": params, "opt_state": self.tx.init(params),
                      "step": jnp.zeros((), jnp.int32)}
        # The curve so far: logged (step, mean loss) pairs and the losses of the steps since
        # the last logged one. Both travel with the checkpoint, so a resumed run logs the same
        # means as an uninterrupted one whatever checkpoint_every and log_every are.
        self.logged: list[tuple[int, float]] = []
        self.window: list[jax.Array] = []
        self.tokens = resources.text_tokens(config, config.train)
        self._step = jax.jit(self._train_step, static_argnums=3)

    def curve_state(self) -> dict:
        """The curve as JSON-able values (float32 losses are exact as Python floats)."""
        return {"logged": [[step, loss] for step, loss in self.logged],
                "window": [float(loss) for loss in self.window]}

    def load_curve_state(self, curve: dict) -> None:
        """Restores what ``curve_state`` returned."""
        self.logged = [(int(step), float(loss)) for step, loss in curve["logged"]]
        self.window = [jnp.asarray(loss, jnp.float32) for loss in curve["window"]]

    def model(self, params=None):
        params = self.state["params"] if params is None else params
        return nnx.merge(self.graphdef, params, self.rest)

    def _train_step(self, state, batch, teacher_state, distil):
        def loss_fn(params):
            student = nnx.merge(self.graphdef, params, self.rest)
            if not distil:
                return jnp.mean(next_token_nll(student, batch))
            inputs = batch[:, :-1]
            teacher_logits = nnx.merge(self.teacher[0], teacher_state)(inputs)
            return jnp.mean(distillation_kl(student(inputs), teacher_logits,
                                            temperature=self.temperature))

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss

    def sparsity(self) -> float:
        """Fraction of exactly-zero entries among the prunable kernels."""
        zeros = total = 0
        for path, leaf in paths.leaves_with_paths(self.state["params"]):
            if allocation.default_prunable(path, leaf):
                zeros += int(jnp.sum(leaf == 0))
                total += leaf.size
        return zeros / max(total, 1)

    def run(self, *, until: int, on_step: Callable[[int], None] | None = None) -> list:
        """Trains from the current step to ``until``; returns the whole curve ``[(step, loss)]``.

        ``on_step(step)`` is called after each step with the number of steps done (the
        binary saves checkpoints there); losses are read only at logging steps, so the
        device is not synchronised every step.
        """
        t = self.config.train
        start = time.perf_counter()
        first = int(self.state["step"])
        for step in range(first, until):
            batch = jnp.asarray(batch_at(self.tokens, step, t.batch_size, t.seq_len,
                                         self.config.seed))
            teacher_state = self.teacher[1] if self.teacher else None
            self.state, loss = self._step(self.state, batch, teacher_state, bool(self.teacher))
            self.window.append(loss)
            if (step + 1) % t.log_every == 0 or step + 1 == until:
                mean = float(jnp.mean(jnp.stack(self.window)))
                if not np.isfinite(mean):
                    raise FloatingPointError(f"training loss is {mean} at step {step + 1}; "
                                             "lower config.train.learning_rate")
                rate = (step + 1 - first) / (time.perf_counter() - start)
                logging.info("step %d/%d: loss %.4f, %.2f steps/s, %.0f tokens/s", step + 1,
                             t.steps, mean, rate, rate * t.batch_size * t.seq_len)
                self.logged.append((step + 1, mean))
                self.window = []
            if on_step is not None:
                on_step(step + 1)
        return list(self.logged)


def evaluate(trainer: Trainer, config, resources: common.Resources) -> dict:
    """Perplexity of the trained model by ``config.eval`` and its measured sparsity."""
    result = common.evaluate(trainer.model(), resources.evaluation_tokens(config), config.eval)
    return {"perplexity": result.perplexity, "mean_nll": result.mean_nll,
            "sparsity": trainer.sparsity()}


def run_point(config, resources: common.Resources) -> dict:
    """Trains from scratch (no checkpoints) and evaluates; the sweep's entry point."""
    start = time.perf_counter()
    trainer = Trainer(config, resources)
    logged = trainer.run(until=config.train.steps)
    train_seconds = time.perf_counter() - start
    metrics = {"method": config.rule, "setting": f"{config.sparsity.final:.0%}"
               if config.rule != "dense" else "dense",
               "final_loss": logged[-1][1], **evaluate(trainer, config, resources),
               "params_sha256": params_fingerprint(trainer.state["params"])}
    return {"metrics": metrics, "timings": {"train_seconds": train_seconds,
                                            "eval_seconds": time.perf_counter() - start -
                                            train_seconds},
            "curve": logged}


def checkpoint_manager(workdir: str):
    """An orbax manager for ``WORKDIR/checkpoints`` keeping the last two, saving synchronously
    (orbax writes each checkpoint to a temporary directory and renames it when complete)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options)


def save(manager, trainer) -> None:
    """Saves the trainer's state and its curve under its step."""
    import orbax.checkpoint as ocp

    step = int(trainer.state["step"])
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(trainer.state),
                                               curve=ocp.args.JsonSave(trainer.curve_state())))
    manager.wait_until_finished()


def restore_latest(manager, trainer) -> int:
    """Loads the latest checkpoint (state and curve) into ``trainer``; returns its step (0
    when none)."""
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        return 0
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), trainer.state)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(template), curve=ocp.args.JsonRestore()))
    trainer.state = restored["state"]
    trainer.load_curve_state(restored["curve"])
    logging.info("resumed from the checkpoint of step %d", step)
    return step


def run_with_checkpoints(trainer: Trainer, workdir: str) -> list:
    """Trains to ``config.train.steps``, resuming from and saving orbax checkpoints under
    ``WORKDIR/checkpoints`` every ``config.train.checkpoint_every`` steps and at the end (none
    without a workdir). Returns the whole logged curve ``[(step, loss)]``, the part before a
    resume included; a finished run restores its last checkpoint and trains no further.

    The caller must have claimed ``workdir`` for this config (``common.claimed_workdir``):
    the checkpoints there are taken to be this config's.
    """
    config = trainer.config
    manager = checkpoint_manager(workdir) if workdir else None
    if manager is not None:
        restore_latest(manager, trainer)
    every = config.train.checkpoint_every

    def on_step(step):
        if manager is not None and (step % every == 0 or step == config.train.steps):
            save(manager, trainer)

    return trainer.run(until=config.train.steps, on_step=on_step)


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
