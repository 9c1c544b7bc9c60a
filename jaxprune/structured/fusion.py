"""Layer fusion: fold a run of consecutive blocks into the run's first block.

A fused model has exactly the shapes of a depth cut of as many blocks; only the kept block's
weights differ from its dense values. Three methods, each a value with a ``fuse`` method:

* ``AverageFusion``: every parameter of the kept block is the mean over the run (the baseline).
* ``LaCoFusion``: Reserving-Differences-while-Seeking-Common; each linear layer of the kept
  block becomes ``W_first + sum_k (W_k - W_first)`` over the run's other blocks, its norms stay.
* ``LowRankFusion``: the kept block's output projections (``o_proj`` then ``down_proj``) get
  low-rank updates fitted on calibration activations so that the kept block alone maps the
  run's input to what the dense run outputs: a closed-form reduced-rank ridge regression from
  the projection's input to the missing residual update, one projection at a time (the second
  fitted on the activations left by the first), merged into dense weights.

``fuse_runs`` fuses several disjoint runs bottom-up; a data-driven method then sees, for each
run, the input the already-fused model below it produces, and matches the dense run's output
on that input (the sequential order of one-shot pruning).

References:
  Yang et al. 2024, "LaCo: Large Language Model Pruning via Layer Collapse" (RDSC merge);
  Izenman 1975, "Reduced-rank regression for the multivariate linear model" (the rank-r fit).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from jaxprune.models import Llama, hf_tensors_from_model, model_from_hf_tensors
from jaxprune.structured.surgery import interpolate_blocks, model_without_blocks

# The linear layers of a block and their biases (Qwen2's q/k/v), in Hugging Face names.
LINEAR_TENSORS = tuple(f"{proj}.{kind}" for proj in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj") for kind in ("weight", "bias"))
# What LowRankFusion updates, in order, and the key of its input in Block.forward_with_inputs.
OUTPUT_PROJECTIONS = {"self_attn.o_proj": "o", "mlp.down_proj": "down"}


def check_run(config, first: int, length: int, *, keeps_first_block: bool = False) -> None:
    """Refuses a run that does not lie inside the model or mixes block widths.

    Raises:
      ValueError: naming the run, the model's block count and what is allowed.
    """
    for name, value in (("first", first), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if length < 2:
        raise ValueError(f"a fused run needs at least 2 blocks, got length={length}")
    lowest = 1 if keeps_first_block else 0
    if not lowest <= first or first + length > config.num_layers:
        raise ValueError(
            f"the run of blocks {first}..{first + length - 1} does not fit: the model has "
            f"{config.num_layers} blocks and runs must lie within blocks {lowest}.."
            f"{config.num_layers - 1}" + (" (this method never fuses block 0, which every "
                                          "later block reads)" if keeps_first_block else ""))
    widths = {(config.num_heads[b], config.num_kv_heads[b], config.intermediate_size[b])
              for b in range(first, first + length)}
    if len(widths) > 1:
        raise ValueError(f"blocks {first}..{first + length - 1} differ in width (heads, KV "
                         f"heads, MLP channels): {sorted(widths)}")


def _block_tensors(tensors: dict, block: int) -> dict[str, str]:
    """Names within a block (``self_attn.q_proj.weight``) -> full tensor names."""
    prefix = f"model.layers.{block}."
    return {k[len(prefix):]: k for k in tensors if k.startswith(prefix)}


def _drop_rest_of_run(model: Llama, tensors: dict, first: int, length: int) -> Llama:
    """The model with ``tensors`` as weights and blocks ``first + 1 .. first + length - 1``
    removed, built once."""
    dtype = model.embed_tokens.embedding[...].dtype
    return model_without_blocks(model.config, tensors, range(first + 1, first + length),
                                param_dtype=dtype)


class RunFusion:
    """What every fusion method has: ``name``, ``needs_data`` (calibration segments),
    ``keeps_first_block`` (block 0 is never fused), ``check`` and ``fuse``."""

    name: str
    needs_data: bool
    keeps_first_block: bool

    def check(self, config, first: int, length: int) -> None:
        """Refuses a run this method cannot fuse, before any work (``check_run``)."""
        check_run(config, first, length, keeps_first_block=self.keeps_first_block)


@dataclasses.dataclass(frozen=True)
class AverageFusion(RunFusion):
    """Every parameter of the kept block is the mean of the run's (the fusion baseline)."""

    name: str = "average"
    needs_data: bool = False
    keeps_first_block: bool = False

    def fuse(self, model: Llama, first: int, length: int, **unused) -> Llama:
        """The model with blocks ``first .. first + length - 1`` folded into ``first``."""
        del unused
        self.check(model.config, first, length)
        return interpolate_blocks(model, first, [1.0 / length] * length)


@dataclasses.dataclass(frozen=True)
class LaCoFusion(RunFusion):
    """LaCo's RDSC layer merge: ``W_first + sum_k (W_k - W_first)`` for every linear layer of
    the run (weights and biases); the kept block's norms are its own. Block 0 is never fused,
    as LaCo merges only above a lowest layer.

    References:
      Yang et al. 2024, "LaCo: Large Language Model Pruning via Layer Collapse".
    """

    name: str = "laco"
    needs_data: bool = False
    keeps_first_block: bool = True

    def fuse(self, model: Llama, first: int, length: int, **unused) -> Llama:
        """The model with blocks ``first .. first + length - 1`` merged into ``first``."""
        del unused
        self.check(model.config, first, length)
        tensors = hf_tensors_from_model(model)
        base = _block_tensors(tensors, first)
        for short in LINEAR_TENSORS:
            if short not in base:
                continue
            kept = tensors[base[short]]
            merged = kept.copy()
            for b in range(first + 1, first + length):
                merged += tensors[_block_tensors(tensors, b)[short]] - kept
            tensors[base[short]] = merged
        return _drop_rest_of_run(model, tensors, first, length)


def reduced_rank_ridge(gram: np.ndarray, cross: np.ndarray, rank: int,
                       damp: float) -> np.ndarray:
    """The rank-``rank`` matrix ``B`` minimising ``|X B - T|^2 + lam |B|^2`` from the
    statistics ``gram = X^T X`` and ``cross = X^T T``, ``lam = damp * mean(diag(gram))``.

    The ridge solution ``B_lam = (X^T X + lam I)^-1 X^T T`` projected on the top ``rank``
    eigenvectors of ``B_lam^T (X^T X + lam I) B_lam`` (the fitted values of the ridge problem
    written as least squares on augmented data); ``rank`` equal to the output width gives
    ``B_lam`` itself.

    Args:
      gram: ``[in, in]``, float64.
      cross: ``[in, out]``.
      rank: the rank kept, ``1 <= rank <= min(in, out)``.
      damp: ridge strength relative to the mean diagonal of ``gram``, > 0.

    Returns:
      ``B``, ``[in, out]``, float64.

    Raises:
      ValueError: for statistics that are not finite, or a damped Gram matrix that is not
        positive definite (all activations zero).

    References:
      Mukherjee & Zhu 2011, "Reduced rank ridge regression and its kernel extensions".
    """
    gram, cross = np.asarray(gram, np.float64), np.asarray(cross, np.float64)
    if not (np.all(np.isfinite(gram)) and np.all(np.isfinite(cross))):
        raise ValueError("the fit's statistics hold NaN or inf: the calibration activations "
                         "reaching the layer are not finite")
    damped = gram + damp * np.mean(np.diag(gram)) * np.eye(gram.shape[0])
    try:
        lower = np.linalg.cholesky(damped)
    except np.linalg.LinAlgError as error:
        raise ValueError(f"the damped Gram matrix of the fit ({gram.shape[0]} inputs, "
                         f"damp={damp}) is not positive definite: no calibration activation "
                         f"reaches the layer") from error
    solve = lambda b: np.linalg.solve(lower.T, np.linalg.solve(lower, b))  # noqa: E731
    ridge = solve(cross)
    if rank >= ridge.shape[1]:
        return ridge
    _, vectors = np.linalg.eigh(ridge.T @ damped @ ridge)
    top = vectors[:, -rank:]
    return ridge @ top @ top.T


# Module-level with the graphs static, so fusions of blocks of one structure share programs.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _prefix(graph, first: int, state, tokens):
    net = nnx.merge(graph, state)
    h = net.embed(tokens)
    cos, sin = net.rope(tokens.shape[1])
    for block in list(net.layers)[:first]:
        h = block(h, cos, sin)
    return h


def _run_inputs(model: Llama, first: int, segments: np.ndarray,
                batch_size: int) -> list[jax.Array]:
    """The residual stream entering block ``first`` for each batch of calibration segments."""
    graph, state = nnx.split(model)
    return [_prefix(graph, first, state, jnp.asarray(segments[i:i + batch_size]))
            for i in range(0, len(segments), batch_size)]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _statistics(kept_graph, run_graph, key: str, kept_state, run_state, h, cos, sin):
    out, inputs = nnx.merge(kept_graph, kept_state).forward_with_inputs(h, cos, sin)
    target = h
    for block in nnx.merge(run_graph, run_state):
        target = block(target, cos, sin)
    x = inputs[key].reshape(-1, inputs[key].shape[-1]).astype(jnp.float32)
    t = (target - out).reshape(-1, out.shape[-1]).astype(jnp.float32)
    return x.T @ x, x.T @ t, jnp.sum(t * t)


def _fit_statistics(kept_block, run_blocks, inputs: list[jax.Array], rope, key: str):
    """``X^T X``, ``X^T T`` and ``|T|^2`` (float64) over every calibration token, where ``X`` is
    the kept block's input to one projection and ``T`` the dense run's output minus the kept
    block's."""
    kept_graph, kept_state = nnx.split(kept_block)
    run_graph, run_state = nnx.split(nnx.List(run_blocks))
    gram = cross = energy = 0.0
    for h in inputs:
        g, c, e = _statistics(kept_graph, run_graph, key, kept_state, run_state, h, *rope)
        gram, cross = gram + np.asarray(g, np.float64), cross + np.asarray(c, np.float64)
        energy += float(e)
    return gram, cross, energy


@dataclasses.dataclass(frozen=True)
class LowRankFusion(RunFusion):
    """Folds a run into its first block by rank-``rank`` updates of the block's ``o_proj``
    and ``down_proj``, fitted (``reduced_rank_ridge``) so the kept block alone reproduces the
    dense run's output on the calibration data; merged into dense weights.

    Attributes:
      rank: rank of each update, ``1 <= rank <= min(in, out)`` of both projections.
      damp: ridge strength relative to the mean diagonal of the activations' Gram matrix.
    """

    rank: int = 64
    damp: float = 0.01
    name: str = "lowrank"
    needs_data: bool = True
    keeps_first_block: bool = False

    def check(self, config, first: int, length: int) -> None:
        """Refuses a run, rank or damping this method cannot fit, before any work.

        Raises:
          ValueError: naming the setting, its value and what is allowed.
        """
        super().check(config, first, length)
        if config.sandwich_norms:
            raise ValueError("low-rank fusion fits updates of the projections that write the "
                             "residual stream; with sandwich_norms (Gemma) a norm sits between "
                             "them and the stream, so the closed-form fit does not hold")
        widest = min(config.num_heads[first] * config.head_dim, config.intermediate_size[first],
                     config.hidden_size)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or not (
                1 <= self.rank <= widest):
            raise ValueError(f"rank must be an integer in [1, {widest}] (the narrower side of "
                             f"block {first}'s o_proj and down_proj), got {self.rank!r}")
        if not (isinstance(self.damp, (int, float)) and 0 < self.damp < np.inf):
            raise ValueError(f"damp must be a positive finite number, got {self.damp!r}")

    def fuse(self, model: Llama, first: int, length: int, *, segments: np.ndarray,
             reference: Llama | None = None, reference_first: int | None = None,
             batch_size: int = 8) -> Llama:
        """The model with blocks ``first .. first + length - 1`` folded into ``first``.

        Args:
          model: the model whose run is fused (not changed).
          first, length: the run.
          segments: calibration token ids ``[n, seq]``.
          reference: the dense model whose run the fused block must reproduce (default
            ``model``); ``reference_first`` its index of the run's first block.
          batch_size: segments per forward pass.
        """
        self.check(model.config, first, length)
        if reference is None:
            reference = model
        if reference_first is None:
            reference_first = first
        started = time.perf_counter()
        segments = np.asarray(segments)
        inputs = _run_inputs(model, first, segments, batch_size)
        run = list(reference.layers)[reference_first:reference_first + length]
        rope = model.rope(segments.shape[1])
        dtype = model.embed_tokens.embedding[...].dtype
        tensors, current = hf_tensors_from_model(model), model
        for projection, key in OUTPUT_PROJECTIONS.items():
            gram, cross, energy = _fit_statistics(current.layers[first], run, inputs, rope, key)
            update = reduced_rank_ridge(gram, cross, self.rank, self.damp)
            left = energy - 2 * np.sum(update * cross) + np.sum(update * (gram @ update))
            logging.info("low-rank fusion of blocks %d..%d: %s explains %.1f%% of the missing "
                         "update", first, first + length - 1, projection,
                         100 * (1 - left / max(energy, 1e-30)))
            name = f"model.layers.{first}.{projection}.weight"
            tensors[name] = (tensors[name] + update.T).astype(np.float32)
            current = model_from_hf_tensors(model.config, tensors, param_dtype=dtype)
        logging.info("fused blocks %d..%d in %.1f s", first, first + length - 1,
                     time.perf_counter() - started)
        return _drop_rest_of_run(model, tensors, first, length)


AVERAGE = AverageFusion()
LACO = LaCoFusion()


def fuse_runs(model: Llama, starts: Sequence[int], length: int, method, *,
              segments: np.ndarray | None = None, batch_size: int = 8) -> Llama:
    """Folds disjoint runs of ``length`` consecutive blocks, each into its first block.

    Runs are fused bottom-up: a data-driven method fits each run on the input produced by the
    model already fused below it, against the dense run of ``model``.

    Args:
      model: the dense model (not changed).
      starts: first block of each run, in ``model``'s numbering.
      length: blocks per run (the model loses ``length - 1`` per run).
      method: ``AVERAGE``, ``LACO``, a ``LowRankFusion`` or another ``RunFusion``.
      segments: calibration token ids ``[n, seq]``, for a method that ``needs_data``.
      batch_size: segments per forward pass.

    Returns:
      The fused model, ``len(starts) * (length - 1)`` blocks fewer.

    Raises:
      ValueError: for overlapping runs, a run the method refuses, or missing calibration data;
        before any fusion.
    """
    return _fuse_disjoint_runs(model, [(int(s), length) for s in starts], method,
                               segments=segments, batch_size=batch_size)


def runs_below(blocks: Sequence[int]) -> list[tuple[int, int]]:
    """The runs that fold ``blocks`` into the nearest block below each: every maximal run of
    consecutive removed blocks joins the kept block just below it.

    Args:
      blocks: the blocks to remove, any order.

    Returns:
      ``(first, length)`` per run, sorted: ``first`` the kept block, ``length - 1`` removed.

    Raises:
      ValueError: when block 0 is among ``blocks`` (no block lies below it).
    """
    blocks = sorted({int(b) for b in blocks})
    if blocks and blocks[0] == 0:
        raise ValueError("block 0 cannot be folded: no block lies below it to take it in; "
                         "choose blocks 1 and above")
    runs: list[list[int]] = []
    for b in blocks:
        if runs and runs[-1][0] + runs[-1][1] == b:
            runs[-1][1] += 1
        else:
            runs.append([b - 1, 2])
    return [(first, length) for first, length in runs]


def fold_blocks(model: Llama, blocks: Sequence[int], method, *,
                segments: np.ndarray | None = None, batch_size: int = 8) -> Llama:
    """Removes ``blocks`` as a depth cut does, folding each into the kept block below it.

    The cut has the blocks (and so the size) of dropping ``blocks``; the fusion method makes
    the kept block below each run of removed blocks stand in for the run (``runs_below``).
    With the blocks a drop criterion chose (block influence), this separates what the fusion
    method adds from which blocks go.

    Args:
      model: the dense model (not changed).
      blocks: the blocks to remove.
      method: a ``RunFusion`` (``LowRankFusion`` for the fitted fold).
      segments: calibration token ids ``[n, seq]``, for a method that ``needs_data``.
      batch_size: segments per forward pass.

    Returns:
      The model ``len(blocks)`` blocks fewer.

    Raises:
      ValueError: for block 0, a run the method refuses (LaCo's never starts at block 0), or
        missing calibration data; before any fusion.
    """
    return _fuse_disjoint_runs(model, runs_below(blocks), method, segments=segments,
                               batch_size=batch_size)


def _fuse_disjoint_runs(model: Llama, runs: Sequence[tuple[int, int]], method, *,
                        segments: np.ndarray | None, batch_size: int) -> Llama:
    """Checks every ``(first, length)`` run, then fuses them bottom-up (``fuse_runs``)."""
    runs = sorted(runs)
    for first, length in runs:
        method.check(model.config, first, length)
    for (a, n), (b, m) in zip(runs, runs[1:], strict=False):
        if b < a + n:
            raise ValueError(f"runs of blocks {a}..{a + n - 1} and {b}..{b + m - 1} overlap")
    if method.needs_data and segments is None:
        raise ValueError(f"fusion method {method.name!r} fits on calibration data: pass segments")
    fused, removed = model, 0
    for first, length in runs:
        fused = method.fuse(fused, first - removed, length, segments=segments,
                            reference=model, reference_first=first, batch_size=batch_size)
        removed += length - 1
    return fused
