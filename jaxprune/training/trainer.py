"""Training and distillation loops with orbax checkpoints and resume.

Everything that decides the numbers is a function of the settings and the step: batch ``t`` is
drawn with ``numpy.random.default_rng([seed, t])``, so a resumed run sees the same batches as
an uninterrupted one, and the logged curve travels with each checkpoint.
"""

from __future__ import annotations

import dataclasses
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

from jaxprune import allocation, masks, paths
from jaxprune.losses import distillation_kl, next_token_nll
from jaxprune.training.algorithms import MaskRule
from jaxprune.training.transform import sparse_training


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Settings of a training or distillation run (a config's ``train`` section, converted by
    ``from_config``; the section's text fields ``source``, ``path``, ``split`` say where the
    tokens come from and are the caller's).

    Attributes:
      steps: optimizer steps.
      batch_size: windows per step.
      seq_len: tokens per window (each window reads ``seq_len + 1``).
      learning_rate: AdamW's peak rate, after linear warm-up, before cosine decay.
      warmup_steps: linear warm-up steps, in [0, steps).
      final_lr_fraction: the rate at the end, a fraction of the peak.
      weight_decay: AdamW's decoupled weight decay.
      clip_norm: global gradient-norm clip.
      checkpoint_every: steps between checkpoints (``train_with_checkpoints``).
      log_every: steps between logged mean losses.
      seed: batch offsets and the rule's PRNG key.
    """

    steps: int = 500
    batch_size: int = 16
    seq_len: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    checkpoint_every: int = 100
    log_every: int = 25
    seed: int = 0

    @classmethod
    def from_config(cls, train, seed: int) -> TrainSettings:
        """From a config's ``train`` section (every field but the text's) and its seed."""
        return cls(seed=seed, **{f.name: train[f.name] for f in dataclasses.fields(cls)
                                 if f.name != "seed"})


def batch_at(tokens: np.ndarray, step: int, batch_size: int, seq_len: int,
             seed: int, bos_id: int | None = None) -> np.ndarray:
    """Batch ``step``: ``batch_size`` windows of ``seq_len + 1`` tokens at seeded offsets; with
    ``bos_id``, each window is that token then ``seq_len`` tokens of the text (for models that
    always see a BOS first, as evaluation gives them)."""
    rng = np.random.default_rng([seed, step])
    text = seq_len + (bos_id is None)
    starts = rng.integers(0, tokens.size - seq_len - 1, size=batch_size)
    windows = np.stack([tokens[s:s + text] for s in starts]).astype(np.int32)
    if bos_id is None:
        return windows
    return np.concatenate([np.full((batch_size, 1), bos_id, np.int32), windows], axis=1)


def make_optimizer(settings: TrainSettings, rule: MaskRule | None = None):
    """AdamW with linear warm-up and cosine decay, clipped, wrapped by the sparsity rule."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, settings.learning_rate, warmup_steps=max(settings.warmup_steps, 1),
        decay_steps=settings.steps,
        end_value=settings.learning_rate * settings.final_lr_fraction)
    inner = optax.chain(optax.clip_by_global_norm(settings.clip_norm),
                        optax.adamw(schedule, b1=0.9, b2=0.95,
                                    weight_decay=settings.weight_decay))
    if rule is None:
        return inner
    return sparse_training(inner, rule, key=jax.random.PRNGKey(settings.seed))


def params_fingerprint(params) -> str:
    """SHA-256 over every parameter's bytes, in flattening order."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def measured_sparsity(params) -> float:
    """Fraction of exactly-zero entries among the prunable kernels (``masks.sparsity`` of the
    non-zero pattern)."""
    nonzero = paths.map_with_path_str(
        lambda p, leaf: leaf != 0 if allocation.default_prunable(p, leaf) else None, params)
    return masks.sparsity(nonzero)


class Trainer:
    """One training run: model, optimizer and a jitted step over plain pytrees.

    The train state is ``{"params", "opt_state", "step"}``, a pytree that orbax saves. With a
    ``teacher`` the loss is logit distillation (``distillation_kl``) instead of the next-token
    NLL.

    Args:
      model: the model to train (copied; the original is unchanged).
      tokens: the training text's token ids (1-D).
      settings: steps, batches and the optimizer.
      rule: a ``MaskRule`` applied by ``sparse_training``, or ``None`` (dense).
      teacher: a model whose logits the student learns to match.
      temperature: the distillation temperature.
      bos_id: start every window with this token (``Tokenizer.sequence_start``).
      trainable: the variables the optimizer trains (an ``nnx`` filter: every ``nnx.Param``
        by default; ``lora.LoraParam`` for LoRA); the others stay as they are.

    Raises:
      ValueError: for a text shorter than one window.
    """

    def __init__(self, model, tokens: np.ndarray, settings: TrainSettings, *,
                 rule: MaskRule | None = None, teacher=None, temperature: float = 1.0,
                 bos_id: int | None = None, trainable=nnx.Param):
        tokens = np.asarray(tokens)
        if tokens.size < settings.seq_len + 2:
            raise ValueError(f"the training text has {tokens.size} tokens, fewer than seq_len + "
                             f"2 = {settings.seq_len + 2}")
        self.settings = settings
        self.graphdef, params, self.rest = nnx.split(nnx.clone(model), trainable, ...)
        self.teacher = nnx.split(teacher) if teacher is not None else None
        self.temperature = temperature
        self.bos_id = bos_id
        self.tx = make_optimizer(settings, rule)
        self.state = {"params": params, "opt_state": self.tx.init(params),
                      "step": jnp.zeros((), jnp.int32)}
        # The curve so far: logged (step, mean loss) pairs and the losses of the steps since
        # the last logged one. Both travel with the checkpoint, so a resumed run logs the same
        # means as an uninterrupted one whatever checkpoint_every and log_every are.
        self.logged: list[tuple[int, float]] = []
        self.window: list[jax.Array] = []
        self.tokens = tokens
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
        """The model with the current (or the given) parameters."""
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
        return measured_sparsity(self.state["params"])

    def run(self, *, until: int, on_step: Callable[[int], None] | None = None) -> list:
        """Trains from the current step to ``until``; returns the whole curve ``[(step, loss)]``.

        ``on_step(step)`` is called after each step with the number of steps done (checkpoints
        are saved there); losses are read only at logging steps, so the device is not
        synchronised every step.

        Raises:
          FloatingPointError: when a logged mean loss is not finite.
        """
        t = self.settings
        start = time.perf_counter()
        first = int(self.state["step"])
        for step in range(first, until):
            batch = jnp.asarray(batch_at(self.tokens, step, t.batch_size, t.seq_len, t.seed,
                                         self.bos_id))
            teacher_state = self.teacher[1] if self.teacher else None
            self.state, loss = self._step(self.state, batch, teacher_state, bool(self.teacher))
            self.window.append(loss)
            if (step + 1) % t.log_every == 0 or step + 1 == until:
                self._log(step + 1, start, first)
            if on_step is not None:
                on_step(step + 1)
        return list(self.logged)

    def _log(self, done: int, start: float, first: int) -> None:
        """Logs the mean loss of the steps since the last log, with the rates."""
        mean = float(jnp.mean(jnp.stack(self.window)))
        if not np.isfinite(mean):
            raise FloatingPointError(f"training loss is {mean} at step {done}; lower the "
                                     f"learning rate (config.train.learning_rate)")
        rate = (done - first) / (time.perf_counter() - start)
        logging.info("step %d/%d: loss %.4f, %.2f steps/s, %.0f tokens/s", done,
                     self.settings.steps, mean, rate,
                     rate * self.settings.batch_size * self.settings.seq_len)
        self.logged.append((done, mean))
        self.window = []


def checkpoint_manager(directory: str):
    """An orbax manager for ``directory`` keeping the last two, saving synchronously (orbax
    writes each checkpoint to a temporary directory and renames it when complete)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save_checkpoint(manager, trainer: Trainer) -> None:
    """Saves the trainer's state and its curve under its step."""
    import orbax.checkpoint as ocp

    step = int(trainer.state["step"])
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(trainer.state),
                                               curve=ocp.args.JsonSave(trainer.curve_state())))
    manager.wait_until_finished()


def restore_latest(manager, trainer: Trainer) -> int:
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


def train_with_checkpoints(trainer: Trainer, directory: str = "") -> list:
    """Trains to ``settings.steps``, resuming from and saving orbax checkpoints in
    ``directory`` every ``settings.checkpoint_every`` steps and at the end (none without a
    directory). Returns the whole logged curve ``[(step, loss)]``, the part before a resume
    included; a finished run restores its last checkpoint and trains no further.

    The checkpoints found in ``directory`` are taken to be this run's: the caller keeps runs
    of other settings apart (``jaxprune.workdir.open_workdir`` does).
    """
    manager = checkpoint_manager(directory) if directory else None
    if manager is not None:
        restore_latest(manager, trainer)
    steps, every = trainer.settings.steps, trainer.settings.checkpoint_every

    def on_step(step):
        if manager is not None and (step % every == 0 or step == steps):
            save_checkpoint(manager, trainer)

    return trainer.run(until=steps, on_step=on_step)


def distill(student, teacher, tokens: np.ndarray, settings: TrainSettings, *,
            temperature: float = 1.0, checkpoint_dir: str = "",
            bos_id: int | None = None) -> tuple:
    """Logit distillation of ``student`` from ``teacher`` on ``tokens``.

    Args:
      student: the model to train (copied).
      teacher: the model whose logits it learns to match (unchanged).
      tokens: the training text's token ids.
      settings: steps, batches, optimizer.
      temperature: the distillation temperature.
      checkpoint_dir: where orbax checkpoints go (resumed from if present); empty: none.
      bos_id: start every window with this token (``Tokenizer.sequence_start``).

    Returns:
      ``(distilled student, curve [(step, mean loss)])``.

    References:
      Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"; Muralidharan et al.
      2024 (Minitron) for distillation after structured pruning.
    """
    trainer = Trainer(student, tokens, settings, teacher=teacher, temperature=temperature,
                      bos_id=bos_id)
    curve = train_with_checkpoints(trainer, checkpoint_dir)
    return trainer.model(), curve
