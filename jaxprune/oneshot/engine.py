"""Block-by-block one-shot pruning of a decoder with calibration data.

The calibration segments run through the model one block at a time. For each block, the inputs
of its linear layers are summarised (float32 sums over batches: squared input norms, and the
Gram matrix ``X^T X`` for SparseGPT); the chosen layers are pruned; then the block's outputs
become the next block's inputs. With ``order="sequential"`` (the reference repositories' order)
the outputs come from the pruned block, so later blocks see the errors of earlier ones; with
``order="dense"`` every block's statistics come from the dense model. Memory holds the
calibration activations of one block and one batch of intermediates, never the whole model's.

The model is duck-typed: ``embed(tokens)``, ``rope(seq_len)``, ``layers`` (blocks with
``forward_with_inputs(h, cos, sin)`` and a ``LINEAR_INPUTS`` map from linear-layer path to the
input that feeds it), as ``jaxprune.models.Llama`` provides.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxprune import _checks, paths, selection
from jaxprune.masks import apply_masks
from jaxprune.oneshot import owl, scores, sparsegpt
from jaxprune.oneshot.fisher import empirical_fisher_diagonal
from jaxprune.oneshot.stats import InputStats, add_input_stats, batch_input_stats
from jaxprune.patterns import GLOBAL, PER_OUTPUT, Pattern, parse_pattern

METHODS = ("magnitude", "obd", "obd_fisher", "wanda", "sparsegpt")
# A criterion of the caller's: ``prune_oneshot(..., score_fn=f)`` with ``f(kernel, stats)``.
CUSTOM = "custom"
ORDERS = ("sequential", "dense")
ALLOCATIONS = ("uniform", "owl")
# The seven linear layers of every block; never embeddings, norms or the head.
DEFAULT_LAYERS = r"^layers/\d+/(self_attn/[qkvo]_proj|mlp/(gate|up|down)_proj)/kernel$"
_BLOCK_PATH = re.compile(r"^layers/(\d+)/(.+)/kernel$")


@dataclasses.dataclass(frozen=True)
class OneShotConfig:
    """Settings of a one-shot pruning job.

    Attributes:
      method: ``magnitude``, ``obd`` (layer-wise Hessian diagonal), ``obd_fisher`` (empirical
        Fisher diagonal of the LM loss), ``wanda``, ``sparsegpt``, or ``custom`` (the
        ``score_fn`` given to ``prune_oneshot``).
      sparsity: fraction to prune, in [0, 1); ``None`` for N:M (it is ``1 - N/M``).
      pattern: comparison group: ``per_tensor`` (alias ``unstructured``), ``per_output``,
        ``global`` (magnitude only) or ``N:M``. SparseGPT chooses its unstructured mask per
        block of ``blocksize`` columns whatever the group, so it takes ``unstructured`` or N:M.
      layers: regex (``re.search``) over parameter paths choosing the pruned kernels.
      order: ``sequential`` (statistics from the pruned prefix) or ``dense``.
      batch_size: calibration segments per forward pass.
      blocksize: SparseGPT's lazy-update block (columns), a multiple of M for N:M.
      damp: SparseGPT's dampening, a fraction of the mean Hessian diagonal, in (0, 1].
      allocation: ``uniform`` or ``owl`` (per-block sparsities from outlier ratios).
      owl_lambda: OWL's density half-range.
      owl_m: OWL's outlier threshold, a multiple of the block's mean Wanda score.
      mesh_data: devices along the mesh's ``data`` axis: each calibration batch is split over
        them and the statistics are summed across them.
      mesh_model: devices along the ``model`` axis: each pruned kernel is split by output
        units over them, so its solve (SparseGPT rows, Wanda columns) is spread too.
      gather: bring the pruned model and masks back to one device at the end (else they stay
        sharded as they were computed).
    """

    method: str = "wanda"
    sparsity: float | None = 0.5
    pattern: str = "per_output"
    layers: str = DEFAULT_LAYERS
    order: str = "sequential"
    batch_size: int = 8
    blocksize: int = 128
    damp: float = 0.01
    allocation: str = "uniform"
    owl_lambda: float = 0.08
    owl_m: float = 5.0
    mesh_data: int = 1
    mesh_model: int = 1
    gather: bool = True


@dataclasses.dataclass
class OneShotResult:
    """Outcome of ``prune_oneshot``.

    Attributes:
      model: the pruned model (a new object; the input model is unchanged).
      masks: mask tree over the model's state: ``True`` kept, ``None`` for unpruned leaves.
      layers: one dict per pruned kernel: path, sparsity reached, seconds, and SparseGPT's
        dampening.
      block_sparsity: the sparsity asked of each block (differs across blocks under OWL).
      seconds: wall time of the whole job.
    """

    model: Any
    masks: Any
    layers: list[dict]
    block_sparsity: dict[int, float]
    seconds: float


@dataclasses.dataclass(frozen=True)
class _Plan:
    pattern: Pattern
    sparsity: float
    targets: dict[int, list[str]]  # block index -> linear paths inside the block
    mesh: Mesh | None

    @property
    def paths(self) -> set[str]:
        """Every pruned kernel's path."""
        return {p for names in self.targets.values() for p in names}


def _check_mesh(config: OneShotConfig, num_segments: int, chosen) -> Mesh | None:
    """The device mesh of the config, or ``None`` for one device; errors name what fails."""
    data = _checks.check_int("mesh_data", config.mesh_data, minimum=1)
    model = _checks.check_int("mesh_model", config.mesh_model, minimum=1)
    if data * model == 1:
        return None
    if config.batch_size % data or num_segments % data:
        raise ValueError(
            f"mesh_data={data} must divide batch_size ({config.batch_size}) and the number of "
            f"calibration segments ({num_segments}): each batch is split over the data axis")
    for path, leaf in chosen:
        if leaf.shape[-1] % model:
            raise ValueError(f"mesh_model={model} must divide the output size of {path!r} "
                             f"(shape {leaf.shape}): kernels are split by output units")
    if config.method == "obd_fisher":
        raise ValueError("method 'obd_fisher' runs on one device (mesh_data=mesh_model=1)")
    if data * model > jax.device_count():
        raise ValueError(
            f"mesh {data}x{model} (mesh_data x mesh_model) needs {data * model} devices, found "
            f"{jax.device_count()}; on a CPU, JAX_NUM_CPU_DEVICES={data * model} fakes them")
    devices = np.asarray(jax.devices()[: data * model]).reshape(data, model)
    return Mesh(devices, ("data", "model"))


def _check_method(config: OneShotConfig, pattern, score_fn) -> None:
    """The method, its ``score_fn`` and the patterns and settings it supports."""
    if config.method not in (*METHODS, CUSTOM):
        raise ValueError(f"method must be one of {[*METHODS, CUSTOM]}, got {config.method!r}")
    if config.method == CUSTOM and not callable(score_fn):
        raise TypeError(f"method 'custom' needs score_fn(kernel [in, out], stats: InputStats) "
                        f"-> scores [in, out], got score_fn={score_fn!r}")
    if config.method != CUSTOM and score_fn is not None:
        raise ValueError(f"score_fn is used by method 'custom' only, got method "
                         f"{config.method!r}")
    if pattern.kind == GLOBAL and config.method != "magnitude":
        raise ValueError(f"pattern 'global' is supported for method 'magnitude' only, got "
                         f"method {config.method!r}")
    if config.method == "sparsegpt" and pattern.kind == PER_OUTPUT:
        raise ValueError("method 'sparsegpt' chooses its unstructured mask per block of "
                         "columns; pattern must be 'unstructured' or N:M, got 'per_output'")
    if config.order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {config.order!r}")
    _checks.check_int("batch_size", config.batch_size, minimum=1)
    if config.method == "sparsegpt":
        sparsegpt.check_sparsegpt_settings(
            config.blocksize, config.damp, pattern if pattern.is_n_of_m else None)


def _planned_sparsity(config: OneShotConfig, pattern) -> float:
    """The sparsity to reach: the pattern's for N:M (checked against ``config.sparsity``)."""
    if pattern.is_n_of_m:
        if config.sparsity is not None and abs(config.sparsity - pattern.sparsity) > 1e-9:
            raise ValueError(f"sparsity {config.sparsity} disagrees with pattern {pattern}, "
                             f"which keeps {pattern.n} of every {pattern.m} weights: set "
                             f"sparsity={pattern.sparsity!r} (1 - N/M), or leave it None in "
                             f"OneShotConfig to take it from the pattern")
        return pattern.sparsity
    if config.sparsity is None:
        raise ValueError(f"sparsity is required for pattern {str(pattern)!r}")
    _checks.check_fraction("sparsity", config.sparsity, allow_traced=False)
    return float(config.sparsity)


def _check_allocation(config: OneShotConfig, pattern) -> None:
    if config.allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {list(ALLOCATIONS)}, got "
                         f"{config.allocation!r}")
    if config.allocation != "owl":
        return
    if config.method == "magnitude":
        raise ValueError("allocation 'owl' ranks blocks by their Wanda scores, which need "
                         "calibration statistics; method 'magnitude' collects none")
    if pattern.is_n_of_m or pattern.kind == GLOBAL:
        raise ValueError(f"allocation 'owl' sets per-block sparsities; pattern must be "
                         f"'unstructured' or 'per_output', got {str(pattern)!r}")
    if not 0 < config.owl_lambda < 0.5:
        raise ValueError(f"owl_lambda must be in (0, 0.5), got {config.owl_lambda!r}")
    if not config.owl_m > 0:
        raise ValueError(f"owl_m must be > 0, got {config.owl_m!r}")


def _layer_targets(model, config: OneShotConfig, pattern) -> tuple[dict, list]:
    """The kernels ``config.layers`` chooses: ``({block: [paths]}, [(path, leaf)])``."""
    try:
        layer_re = re.compile(config.layers)
    except re.error as err:
        raise ValueError(f"layers {config.layers!r} is not a valid regular expression: {err}"
                         ) from None
    leaves = paths.leaves_with_paths(nnx.state(model, nnx.Param))
    chosen = [(p, leaf) for p, leaf in leaves if layer_re.search(p)]
    if not chosen:
        shown = ", ".join(repr(p) for p, _ in leaves[:6])
        raise ValueError(f"layers {config.layers!r} matches no parameter path; paths look like "
                         f"{shown}")
    targets: dict[int, list[str]] = {}
    linear_inputs = type(model.layers[0]).LINEAR_INPUTS
    for path, leaf in chosen:
        match = _BLOCK_PATH.match(path)
        if not match or match.group(2) not in linear_inputs:
            raise ValueError(f"layers {config.layers!r} matches {path!r}, which is not the "
                             f"kernel of a block's linear layer ({sorted(linear_inputs)})")
        if pattern.is_n_of_m and leaf.shape[0] % pattern.m:
            raise ValueError(f"pattern {pattern} needs the input size of {path!r} divisible by "
                             f"M={pattern.m}, got shape {leaf.shape}")
        targets.setdefault(int(match.group(1)), []).append(path)
    return targets, chosen


def _check_segments(segments: np.ndarray, vocab: int) -> None:
    if segments.ndim != 2 or segments.shape[0] < 1 or segments.shape[1] < 2:
        raise ValueError(f"calibration segments must be [N >= 1, L >= 2] token ids, got shape "
                         f"{segments.shape}")
    if not np.issubdtype(segments.dtype, np.integer):
        raise TypeError(f"calibration segments must be integer token ids, got {segments.dtype}")
    if segments.min() < 0 or segments.max() >= vocab:
        raise ValueError(f"calibration token ids must be in [0, {vocab}), got "
                         f"[{segments.min()}, {segments.max()}]")


def plan_oneshot(model, segments: np.ndarray, config: OneShotConfig, *,
                 score_fn=None) -> _Plan:
    """Checks the config against the model and the calibration data, before any work.

    Raises:
      TypeError, ValueError: naming the setting, its value and what is allowed.
    """
    pattern = parse_pattern(config.pattern)
    _check_method(config, pattern, score_fn)
    sparsity = _planned_sparsity(config, pattern)
    _check_allocation(config, pattern)
    targets, chosen = _layer_targets(model, config, pattern)
    segments = np.asarray(segments)
    _check_segments(segments, model.config.vocab_size)
    mesh = _check_mesh(config, segments.shape[0], chosen)
    return _Plan(pattern, sparsity, targets, mesh)


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef, state, tokens):
    return nnx.merge(graphdef, state).embed(tokens)


@functools.partial(jax.jit, static_argnums=0)
def _block_forward(graphdef, state, h, cos, sin):
    return nnx.merge(graphdef, state)(h, cos, sin)


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _block_stats(graphdef, state, h, cos, sin, groups, with_gram):
    out, inputs = nnx.merge(graphdef, state).forward_with_inputs(h, cos, sin)
    return out, {g: batch_input_stats(inputs[g], with_gram=with_gram) for g in groups}


def _collect_block_stats(block, hidden, cos, sin, groups, with_gram):
    """Runs the dense block over every batch: its outputs and the summed input statistics."""
    block_graphdef, block_state = nnx.split(block)
    stats: dict[str, InputStats] = {}
    outputs = []
    for h in hidden:
        out, batch_stats = _block_stats(block_graphdef, block_state, h, cos, sin, groups,
                                        with_gram)
        outputs.append(out)
        stats = {g: add_input_stats(stats.get(g), s) for g, s in batch_stats.items()}
    return outputs, stats


def _linear(block, name: str):
    node = block
    for part in name.split("/"):
        node = getattr(node, part)
    return node


@functools.partial(jax.jit, static_argnames=("method", "sparsity", "pattern", "score_fn"))
def _prune_by_scores(kernel, statistic, *, method, sparsity, pattern, score_fn=None):
    """Scores one kernel, keeps the best of each comparison group, zeroes the rest.

    Returns:
      ``(pruned kernel, kept mask, whether every score was finite)``.
    """
    if method == "wanda":
        layer_scores = scores.wanda_scores(kernel, statistic)
    elif method == CUSTOM:
        layer_scores = score_fn(kernel, statistic)
    else:  # obd and obd_fisher: a per-input or per-weight Hessian diagonal
        layer_scores = scores.obd_scores(kernel, statistic)
    keep = selection.select_masks({"w": layer_scores}, sparsity, pattern)["w"]
    finite = jnp.all(jnp.isfinite(layer_scores))
    return jnp.where(keep, kernel, jnp.zeros((), kernel.dtype)), keep, finite


def prune_oneshot(model, segments: np.ndarray, config: OneShotConfig = OneShotConfig(), *,
                  progress: bool = True, score_fn=None) -> OneShotResult:
    """Prunes a decoder one-shot with calibration data, block by block.

    Args:
      model: the dense model (left unchanged).
      segments: calibration token ids ``[N, L]``.
      config: method and settings.
      progress: show progress bars.
      score_fn: with ``method="custom"``, the criterion: ``score_fn(kernel, stats)`` maps a
        kernel ``[in, out]`` and the ``InputStats`` of its inputs (``sq_norms`` ``[in]``,
        ``count``) to scores ``[in, out]``, higher kept. It runs under ``jit``, so it must be
        traceable; it gets the same statistics, order and selection as Wanda.

    Returns:
      A ``OneShotResult`` with the pruned model, its masks and a per-layer report.

    Raises:
      TypeError, ValueError: for bad settings or data, before any work.
      FloatingPointError: when a SparseGPT solve fails even with raised dampening, or produces
        NaN or Inf, or when a layer's scores are not finite (the message names the layer).

    References:
      Frantar & Alistarh 2023 (SparseGPT) and Sun et al. 2023 (Wanda) for the protocol.
    """
    plan = plan_oneshot(model, segments, config, score_fn=score_fn)
    start = time.perf_counter()
    pruned = nnx.clone(model)  # new variables; arrays are shared until replaced
    if plan.mesh is not None:
        _shard_model(pruned, plan)
    graphdef, state = nnx.split(pruned)
    if config.method == "magnitude":
        return _finish(_magnitude(pruned, plan, start), plan, config)
    segments = np.asarray(segments, np.int32)
    batches = _calibration_batches(segments, config.batch_size, plan.mesh)
    cos, sin = pruned.rope(segments.shape[1])
    fisher = None
    if config.method == "obd_fisher":
        fisher = empirical_fisher_diagonal(model, segments, plan.paths, progress=progress)
    block_sparsity = {i: plan.sparsity for i in plan.targets}
    if config.allocation == "owl":
        block_sparsity = _owl_block_sparsity(pruned, graphdef, state, batches, cos, sin, plan,
                                             config, progress)
    hidden = [_embed(graphdef, state, b) for b in batches]
    masks: dict[str, jax.Array] = {}
    rows: list[dict] = []
    linear_inputs = type(pruned.layers[0]).LINEAR_INPUTS
    bar = tqdm(range(len(pruned.layers)), desc=f"{config.method} blocks", unit="block",
               disable=not progress)
    for index in bar:
        block = pruned.layers[index]
        names = plan.targets.get(index, [])
        needs_stats = bool(names) and config.method in ("obd", "wanda", "sparsegpt", CUSTOM)
        dense_out = None
        if needs_stats or (config.order == "dense" and names):
            groups = tuple(sorted({linear_inputs[_BLOCK_PATH.match(p).group(2)] for p in names}))
            dense_out, stats = _collect_block_stats(block, hidden, cos, sin, groups,
                                                    config.method == "sparsegpt")
        for path in names:
            name = _BLOCK_PATH.match(path).group(2)
            group_stats = stats[linear_inputs[name]] if needs_stats else None
            masks[path], row = _prune_layer(
                _linear(block, name), path, group_stats, fisher, block_sparsity[index], plan,
                config, score_fn)
            rows.append(row)
        if config.order == "dense" and dense_out is not None:
            hidden = dense_out
        else:  # the block as it now is: pruned if it had targets
            block_graphdef, block_state = nnx.split(block)
            hidden = [_block_forward(block_graphdef, block_state, h, cos, sin) for h in hidden]
        if names:
            logging.info("block %d: pruned %d layers, %.1f s elapsed", index, len(names),
                         time.perf_counter() - start)
    bar.close()
    result = OneShotResult(pruned, _mask_tree(pruned, masks), rows, block_sparsity,
                           time.perf_counter() - start)
    return _finish(result, plan, config)


def _calibration_batches(segments: np.ndarray, batch_size: int, mesh) -> list[jax.Array]:
    """The calibration segments in batches, split over the mesh's ``data`` axis if any."""
    batches = [jnp.asarray(segments[i:i + batch_size])
               for i in range(0, len(segments), batch_size)]
    if mesh is not None:
        batches = [jax.device_put(b, NamedSharding(mesh, P("data"))) for b in batches]
    return batches


def _prune_layer(linear, path: str, group_stats, fisher, sparsity: float, plan: _Plan,
                 config: OneShotConfig, score_fn) -> tuple[jax.Array, dict]:
    """Prunes one linear layer in place by ``config.method``; returns its mask and report row.

    Raises:
      ValueError: for custom scores of the wrong shape.
      FloatingPointError: for scores that are not finite (or a failed SparseGPT solve).
    """
    layer_start = time.perf_counter()
    kernel = linear.kernel[...]
    row = {"path": path}
    if config.method == "sparsegpt":
        new_kernel, keep, row["damp"] = sparsegpt.sparsegpt_with_retry(
            kernel, group_stats.gram, name=path,
            sparsity=None if plan.pattern.is_n_of_m else sparsity,
            pattern=plan.pattern if plan.pattern.is_n_of_m else None,
            blocksize=config.blocksize, damp=config.damp)
    else:
        if config.method == CUSTOM:
            statistic = group_stats
            shape = jax.eval_shape(score_fn, kernel, statistic).shape
            if shape != kernel.shape:
                raise ValueError(f"score_fn returned scores of shape {shape} for "
                                 f"{path!r} of shape {kernel.shape}; they must match")
        elif fisher is not None:
            statistic = fisher[path]
        else:
            statistic = group_stats.sq_norms
        new_kernel, keep, finite = _prune_by_scores(
            kernel, statistic, method=config.method, sparsity=sparsity, pattern=plan.pattern,
            score_fn=score_fn)
        if not bool(finite):
            raise FloatingPointError(f"{config.method} scores of {path!r} contain NaN "
                                     f"or Inf; no mask was chosen from them")
    linear.kernel[...] = new_kernel
    row["sparsity"] = 1.0 - float(jnp.mean(keep))
    row["seconds"] = time.perf_counter() - layer_start
    return keep, row


def _shard_model(model, plan: _Plan) -> None:
    """Splits the pruned kernels by output units over ``model``; replicates everything else."""
    wanted = plan.paths
    split = NamedSharding(plan.mesh, P(None, "model"))
    replicated = NamedSharding(plan.mesh, P())
    state = nnx.state(model)
    shardings = paths.map_with_path_str(lambda p, _: split if p in wanted else replicated, state)
    nnx.update(model, jax.device_put(state, shardings))


def _finish(result: OneShotResult, plan: _Plan, config: OneShotConfig) -> OneShotResult:
    """Gathers a sharded result onto one device when the config asks for it."""
    if plan.mesh is None or not config.gather:
        return result
    device = jax.devices()[0]
    nnx.update(result.model, jax.device_put(nnx.state(result.model), device))
    result.masks = jax.device_put(result.masks, device)
    return result


def _mask_tree(model, masks: dict[str, jax.Array]):
    return paths.map_with_path_str(lambda p, _: masks.get(p), nnx.state(model))


def _magnitude(pruned, plan: _Plan, start: float) -> OneShotResult:
    """Magnitude needs no calibration: all layers at once (global selection supported)."""
    state = nnx.state(pruned, nnx.Param)
    wanted = plan.paths
    sparsity = paths.map_with_path_str(lambda p, _: plan.sparsity if p in wanted else None, state)
    select = jax.jit(lambda params: selection.select_masks(
        jax.tree.map(scores.magnitude_scores, params), sparsity, plan.pattern))
    masks = select(state)
    by_path = dict(paths.leaves_with_paths(masks))
    rows = [{"path": p, "sparsity": 1.0 - float(jnp.mean(m)), "seconds": 0.0}
            for p, m in by_path.items()]
    nnx.update(pruned, apply_masks(state, masks))
    block_sparsity = dict.fromkeys(plan.targets, plan.sparsity)
    return OneShotResult(pruned, _mask_tree(pruned, by_path), rows, block_sparsity,
                         time.perf_counter() - start)


def _owl_block_sparsity(pruned, graphdef, state, batches, cos, sin, plan: _Plan,
                        config: OneShotConfig, progress: bool) -> dict[int, float]:
    """OWL's dense pass: outlier ratio of each block's Wanda scores, then the allocation."""
    linear_inputs = type(pruned.layers[0]).LINEAR_INPUTS
    hidden = [_embed(graphdef, state, b) for b in batches]
    ratios = {}
    for index in tqdm(range(len(pruned.layers)), desc="owl ratios", disable=not progress):
        block = pruned.layers[index]
        groups = tuple(sorted(set(linear_inputs.values())))
        hidden, stats = _collect_block_stats(block, hidden, cos, sin, groups, False)
        names = plan.targets.get(index, [])
        if names:
            block_scores = []
            for path in names:
                name = _BLOCK_PATH.match(path).group(2)
                kernel = _linear(block, name).kernel[...]
                norms = stats[linear_inputs[name]].sq_norms
                block_scores.append(scores.wanda_scores(kernel, norms))
            ratios[index] = owl.outlier_ratio(block_scores, config.owl_m)
    order = sorted(ratios)
    values = owl.owl_sparsities([ratios[i] for i in order], plan.sparsity, config.owl_lambda)
    logging.info("OWL block sparsities: %s", [round(v, 4) for v in values])
    return dict(zip(order, values, strict=True))


def achieved_sparsity(result: OneShotResult) -> float:
    """Fraction of zeros over the pruned kernels."""
    kept, total = 0, 0
    for mask in jax.tree.leaves(result.masks):
        kept += int(jnp.sum(mask))
        total += math.prod(mask.shape)
    return 1.0 - kept / total if total else 0.0


