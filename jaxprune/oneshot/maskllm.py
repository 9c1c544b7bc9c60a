"""MaskLLM: N:M masks learned end to end with Gumbel-softmax over the candidate patterns
(Fang et al., NeurIPS 2024).

Each group of M consecutive inputs of an output unit chooses one of the ``C(M, N)`` candidate
patterns (6 for 2:4). The choice is a categorical distribution with learnable logits ``g``; a
training step samples a soft choice ``softmax((kappa g + Gumbel noise) / tau)``, mixes the
candidates by it into a soft mask, and runs the model with every pruned kernel multiplied by
its soft mask. The weights are frozen; only the logits learn, by Adam, on the language-model
loss minus ``lambda (1 - t / T) sum ||W * mask||^2`` (the paper's sparse weight
regularisation: keeping the kept weights large keeps gradients flowing; it fades out over the
run). ``tau`` falls linearly from 4 to 0.05 and ``kappa`` rises from 100 to 500 (the paper's
schedules), so the choices harden. The logits start at ``N(0, 0.01)`` plus a prior from a
one-shot method's mask: each candidate gains ``strength * std(g) * (overlap - 1)``, ``overlap``
the number of the prior's kept weights it keeps (the paper's prior, strength 3). The learned
mask is each group's most likely candidate; the kernel is the dense kernel under it.

The paper learns 2,000 steps of 256 windows of 4,096 tokens on 64 GPUs; a CPU run here takes
``steps`` steps of ``batch_size`` calibration windows (docs/oneshot.md says the budget).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from tqdm.auto import tqdm

from jaxprune import losses, paths
from jaxprune._checks import check_int, check_real
from jaxprune.patterns import Pattern


def candidate_masks(n: int, m: int) -> np.ndarray:
    """The ``C(m, n)`` patterns keeping ``n`` of ``m``, ``[C, m]`` float32, in the order of
    ``itertools.combinations`` (for 2:4: 1100, 1010, 1001, 0110, 0101, 0011)."""
    options = np.zeros((math.comb(m, n), m), np.float32)
    for row, kept in enumerate(itertools.combinations(range(m), n)):
        options[row, list(kept)] = 1.0
    return options


def _groups(kernel: jax.Array, m: int) -> jax.Array:
    """``[in, out]`` -> ``[out * in / m, m]``: each output unit's consecutive groups of m."""
    return kernel.T.reshape(-1, m)


def _ungroup(groups: jax.Array, shape: tuple[int, int]) -> jax.Array:
    return groups.reshape(shape[1], shape[0]).T


def prior_logits(prior_keep: jax.Array, options: jax.Array, key: jax.Array,
                 strength: float) -> jax.Array:
    """Initial logits ``[groups, C]``: ``N(0, 0.01)`` plus the prior's pull (module docstring)."""
    m = options.shape[1]
    noise = 0.01 * jax.random.normal(key, (prior_keep.size // m, options.shape[0]), jnp.float32)
    overlap = _groups(prior_keep.astype(jnp.float32), m) @ options.T
    return noise + (overlap - 1.0) * jnp.std(noise) * strength


def soft_mask(logits: jax.Array, options: jax.Array, gumbel: jax.Array, tau, scale,
              shape: tuple[int, int]) -> jax.Array:
    """The candidates mixed by ``softmax((scale * logits + gumbel) / tau)``, as an ``[in, out]``
    mask."""
    choice = jax.nn.softmax((scale * logits + gumbel) / tau, axis=-1)
    return _ungroup(choice @ options, shape)


def hard_mask(logits: jax.Array, options: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Each group's most likely candidate, as an ``[in, out]`` boolean mask."""
    return _ungroup(options[jnp.argmax(logits, axis=-1)] > 0, shape)


@dataclasses.dataclass(frozen=True)
class MaskLLM:
    """Settings of MaskLLM's mask learning (module docstring).

    Attributes:
      steps: Adam steps, each on ``batch_size`` calibration windows.
      lr: Adam's learning rate for the logits (the paper: 5e-5 times a gate multiplier of 10),
        decayed by a cosine to a tenth.
      batch_size: calibration windows per step.
      temperature: Gumbel-softmax temperature at the first and the last step.
      scale: logit scale ``kappa`` at the first and the last step.
      prior_strength: pull of the prior mask on the initial logits (0: none).
      weight_reg: ``lambda`` of the sparse weight regularisation.
      seed: the PRNG seed of the initial logits and the Gumbel noise.

    Raises:
      TypeError, ValueError: for a setting out of range, naming its config field.

    References:
      Fang et al. 2024, "MaskLLM: Learnable Semi-Structured Sparsity for Large Language
      Models" (NeurIPS 2024).
    """

    steps: int = 100
    lr: float = 5e-4
    batch_size: int = 4
    temperature: tuple[float, float] = (4.0, 0.05)
    scale: tuple[float, float] = (100.0, 500.0)
    prior_strength: float = 3.0
    weight_reg: float = 1e-5
    seed: int = 0

    def __post_init__(self):
        check_int("maskllm_steps", self.steps, minimum=1)
        check_real("maskllm_lr", self.lr, minimum=0, strict=True)
        check_int("maskllm_batch_size", self.batch_size, minimum=1)
        for name, pair in (("maskllm_temperature", self.temperature),
                           ("maskllm_scale", self.scale)):
            if len(pair) != 2:
                raise ValueError(f"{name} must be a (first, last) pair, got {pair!r}")
            for value in pair:
                check_real(name, value, minimum=0, strict=True)
        check_real("maskllm_prior_strength", self.prior_strength, minimum=0)
        check_real("maskllm_weight_reg", self.weight_reg, minimum=0)
        check_int("maskllm_seed", self.seed, minimum=0)


def _schedule(pair: tuple[float, float], step, steps: int):
    """Linear from ``pair[0]`` at step 0 to ``pair[1]`` at step ``steps``."""
    return pair[0] + (pair[1] - pair[0]) * step / steps


def _masked_state(state, logits: dict, options, key, tau, scale):
    """The model state with each learned kernel times its soft mask, and the masks."""
    names = sorted(logits)
    keys = dict(zip(names, jax.random.split(key, len(names)), strict=True))
    masks = {}

    def apply(path, leaf):
        if path not in logits:
            return leaf
        gumbel = jax.random.gumbel(keys[path], logits[path].shape, jnp.float32)
        masks[path] = soft_mask(logits[path], options, gumbel, tau, scale, leaf.shape)
        return leaf * masks[path].astype(leaf.dtype)

    return paths.map_with_path_str(apply, state), masks


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _mask_step(graphdef, optimizer, settings: MaskLLM, state, logits, opt_state, options,
               tokens, key, step):
    """One Adam step on the logits: the masked model's loss, minus the fading regulariser."""
    tau = _schedule(settings.temperature, step, settings.steps)
    scale = _schedule(settings.scale, step, settings.steps)

    def objective(current):
        masked, masks = _masked_state(state, current, options, key, tau, scale)
        nll = jnp.mean(losses.next_token_nll(nnx.merge(graphdef, masked), tokens))
        kept_norm = sum(jnp.sum(jnp.square(w.astype(jnp.float32)))
                        for p, w in paths.leaves_with_paths(masked) if p in masks)
        fade = 1.0 - step / settings.steps
        return nll - settings.weight_reg * fade * kept_norm, nll

    (_, nll), grads = jax.value_and_grad(objective, has_aux=True)(logits)
    updates, opt_state = optimizer.update(grads, opt_state, logits)
    return optax.apply_updates(logits, updates), opt_state, nll


def learn_nm_masks(model, segments: np.ndarray, prior: dict[str, jax.Array], pattern: Pattern,
                   settings: MaskLLM, *, progress: bool = True) -> tuple[dict, list[float]]:
    """MaskLLM's mask learning over ``model``'s kernels named in ``prior`` (module docstring).

    Args:
      model: the dense model (its weights stay as they are).
      segments: calibration token ids ``[N, L]``, taken ``settings.batch_size`` at a time in
        order, cycling.
      prior: a one-shot method's kept masks ``[in, out]`` by kernel path (N:M).
      pattern: the N:M pattern to learn.
      settings: the schedule and its budget.
      progress: show a progress bar.

    Returns:
      ``(learned masks by path, the language-model loss of each step)``.

    Raises:
      FloatingPointError: when the loss becomes NaN or Inf (no mask is returned).

    References:
      Fang et al. 2024, "MaskLLM: Learnable Semi-Structured Sparsity for Large Language
      Models" (NeurIPS 2024), section 3.
    """
    graphdef, state = nnx.split(model)
    options = jnp.asarray(candidate_masks(pattern.n, pattern.m))
    init_key, noise_key = jax.random.split(jax.random.key(settings.seed))
    names = sorted(prior)
    logits = {p: prior_logits(prior[p], options, k, settings.prior_strength)
              for p, k in zip(names, jax.random.split(init_key, len(names)), strict=True)}
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(
        optax.cosine_decay_schedule(settings.lr, settings.steps, alpha=0.1), b2=0.95, eps=1e-5))
    opt_state, history = optimizer.init(logits), []
    starts = range(0, len(segments) - settings.batch_size + 1, settings.batch_size)
    batches = [jnp.asarray(segments[i:i + settings.batch_size]) for i in starts]
    for step in tqdm(range(settings.steps), desc="maskllm steps", disable=not progress):
        logits, opt_state, nll = _mask_step(
            graphdef, optimizer, settings, state, logits, opt_state, options,
            batches[step % len(batches)], jax.random.fold_in(noise_key, step), step)
        history.append(float(nll))
        if not np.isfinite(history[-1]):
            raise FloatingPointError(f"MaskLLM's loss became {history[-1]} at step {step}; "
                                     f"lower maskllm_lr (now {settings.lr})")
        if step % 10 == 0 or step == settings.steps - 1:
            logging.info("maskllm step %d: loss %.4f", step, history[-1])
    learned = {p: hard_mask(logits[p], options, prior[p].shape) for p in names}
    return learned, history


def maskllm_settings(maskllm_steps: int = 100, maskllm_lr: float = 5e-4,
                     maskllm_batch_size: int = 4, maskllm_prior_strength: float = 3.0,
                     maskllm_weight_reg: float = 1e-5, maskllm_seed: int = 0) -> MaskLLM:
    """The config boundary's MaskLLM (its fields named ``maskllm_*``; the temperature and scale
    schedules are the paper's).

    Raises:
      TypeError, ValueError: for a setting out of range.
    """
    return MaskLLM(steps=maskllm_steps, lr=maskllm_lr, batch_size=maskllm_batch_size,
                   prior_strength=maskllm_prior_strength, weight_reg=maskllm_weight_reg,
                   seed=maskllm_seed)
