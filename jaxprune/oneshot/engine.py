"""Block-by-block one-shot pruning of a decoder with calibration data.

The calibration segments run through the model one block at a time. For each block, the inputs
of its linear layers are summarised (float32 sums over batches: squared input norms, and the
Gram matrix ``X^T X`` for SparseGPT); the chosen layers are pruned; then the block's outputs
become the next block's inputs. With ``order="sequential"`` (the reference repositories' order)
the outputs come from the pruned block, so later blocks see the errors of earlier ones; with
``order="dense"`` every block's statistics come from the dense model. Memory holds the
calibration activations of one block and one batch of intermediates, never the whole model's.

The method is a value (``jaxprune.oneshot.methods``): it declares the statistic it needs and
prunes one kernel at a time, so this engine has no branch per method. The model is
duck-typed: ``embed(tokens)``, ``rope(seq_len)``, ``layers`` (blocks with
``forward_with_inputs(h, cos, sin)``) and ``prunable_linears()`` (each block's linear layers and
the input that feeds each), as ``jaxprune.models.Llama`` provides.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxprune import _checks, criteria, masks, paths, selection
from jaxprune.oneshot import methods, owl
from jaxprune.oneshot.maskllm import MaskLLM, learn_nm_masks
from jaxprune.oneshot.reconstruct import BlockReconstruction, reconstruct_block
from jaxprune.oneshot.regional import RegionalStatistic, RegionalStats, regional_gradients
from jaxprune.oneshot.stats import InputStats, add_input_stats, batch_input_stats
from jaxprune.patterns import GLOBAL, Pattern, parse_pattern

ORDERS = ("sequential", "dense")


@dataclasses.dataclass(frozen=True)
class OneShotConfig:
    """Settings of a one-shot pruning job (configs convert to it with
    ``jaxprune.oneshot.registry.settings_from_config``).

    Attributes:
      method: a one-shot method value (``jaxprune.oneshot.methods``): ``WANDA``, ``MAGNITUDE``,
        ``OBD``, ``OBD_FISHER``, ``SparseGPT(blocksize, damp)``, ``ria_method()``, or a
        ``ScoreMethod(score_fn)`` of the caller's.
      sparsity: fraction to prune, in [0, 1); ``None`` for N:M (it is ``1 - N/M``).
      pattern: comparison group: ``per_tensor`` (alias ``unstructured``), ``per_output``,
        ``global`` (methods without calibration statistics) or ``N:M``.
      layers: regex (``re.search``) over the paths of the model's prunable kernels
        (``model.prunable_linears()``) choosing those pruned; empty: all of them.
      order: ``sequential`` (statistics from the pruned prefix) or ``dense``.
      batch_size: calibration segments per forward pass.
      allocation: ``None`` (every block at ``sparsity``) or ``owl.OWL(owl_lambda, owl_m)``
        (per-block sparsities from outlier ratios).
      reconstruction: ``None``, or ``BlockReconstruction(steps, lr)``: after each block's
        layers are pruned, its kept weights are refit to the dense block's output
        (``jaxprune.oneshot.reconstruct``).
      learn_masks: ``None``, or ``MaskLLM(...)``: N:M only; after the method, its masks are
        the prior of MaskLLM's end-to-end mask learning, and the result is the dense model
        under the learned masks (``jaxprune.oneshot.maskllm``).
      quantization: ``None``, or a quantizer (``jaxprune.oneshot.RoundToNearest(spec)``,
        ``GPTQ(spec)``, the grid a ``jaxprune.quant.QuantSpec``): after each block's layers
        are pruned (and refit), their kernels are quantized keeping their masks, so later
        blocks calibrate on the quantized prefix. A method that quantizes as it prunes
        (``SparseGPT(quant=spec)``) needs none.
      mesh_data: devices along the mesh's ``data`` axis: each calibration batch is split over
        them and the statistics are summed across them.
      mesh_model: devices along the ``model`` axis: each pruned kernel is split by output
        units over them, so its solve (SparseGPT rows, Wanda columns) is spread too.
      gather: bring the pruned model and masks back to one device at the end (else they stay
        sharded as they were computed); under ``jax.distributed`` each process gets the
        whole result on its first local device.
    """

    method: methods.OneShotMethod = methods.WANDA
    sparsity: float | None = 0.5
    pattern: str = "per_output"
    layers: str = ""
    order: str = "sequential"
    batch_size: int = 8
    allocation: owl.OWL | None = None
    reconstruction: BlockReconstruction | None = None
    learn_masks: MaskLLM | None = None
    quantization: Any = None
    mesh_data: int = 1
    mesh_model: int = 1
    # A choice for library callers (a job always gathers to save), so no config field.
    gather: bool = dataclasses.field(default=True, metadata={"config_field": False})


@dataclasses.dataclass
class OneShotResult:
    """Outcome of ``prune_oneshot``.

    Attributes:
      model: the pruned model (a new object; the input model is unchanged).
      masks: mask tree over the model's state: ``True`` kept, ``None`` for unpruned leaves.
      layers: one dict per pruned kernel: path, sparsity reached, seconds, and what the method
        reports (SparseGPT's dampening).
      block_sparsity: the sparsity asked of each block (differs across blocks under OWL).
      seconds: wall time of the whole job.
      block_errors: with a reconstruction, each block's mean squared error against the dense
        block before and after it (by block index); else empty.
      mask_losses: with ``learn_masks``, the language-model loss of each learning step.
      quantized: with quantization, each quantized kernel as a ``qwix.QArray`` by path (the
        model holds the same values in floating point).
    """

    model: Any
    masks: Any
    layers: list[dict]
    block_sparsity: dict[int, float]
    seconds: float
    block_errors: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)
    mask_losses: list[float] = dataclasses.field(default_factory=list)
    quantized: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Plan:
    method: Any
    pattern: Pattern
    sparsity: float
    targets: dict[int, list]  # block index -> the block's PrunableLinear entries
    mesh: Mesh | None

    @property
    def paths(self) -> set[str]:
        """Every pruned kernel's path."""
        return {t.path for names in self.targets.values() for t in names}


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
    if isinstance(config.method.statistic, methods.ModelStatistic | RegionalStatistic):
        raise ValueError(f"method {methods.method_name(config.method)!r} computes its "
                         f"{config.method.statistic.name} on one device "
                         f"(mesh_data=mesh_model=1)")
    if data * model > jax.device_count():
        raise ValueError(
            f"mesh {data}x{model} (mesh_data x mesh_model) needs {data * model} devices, found "
            f"{jax.device_count()}; on a CPU, JAX_NUM_CPU_DEVICES={data * model} fakes them")
    devices = np.asarray(jax.devices()[: data * model]).reshape(data, model)
    return Mesh(devices, ("data", "model"))


def _check_method(config: OneShotConfig, pattern) -> None:
    """The method value, the patterns it supports and the engine's own settings."""
    method = config.method
    if isinstance(method, str) or not isinstance(method, methods.OneShotMethod):
        raise TypeError(f"method must be a one-shot method value (statistic, check, "
                        f"prune_layer), such as jaxprune.oneshot.WANDA or "
                        f"ScoreMethod(score_fn); got {method!r} (names belong to configs: "
                        f"jaxprune.oneshot.registry)")
    statistic = method.statistic
    if statistic is not None and not isinstance(
            statistic, methods.InputStatistic | methods.ModelStatistic | RegionalStatistic):
        raise TypeError(f"method {methods.method_name(method)!r} has statistic "
                        f"{statistic!r}; it must be None, INPUT_NORMS, GRAM, "
                        f"REGIONAL_GRADIENT or a ModelStatistic")
    method.check(pattern)
    if pattern.kind == GLOBAL and not isinstance(method, methods.ScoreMethod):
        raise ValueError(f"pattern 'global' needs a ScoreMethod (scores of every kernel "
                         f"before any is pruned), got {method!r}")
    if config.order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {config.order!r}")
    _checks.check_int("batch_size", config.batch_size, minimum=1)


def _check_one_device(config: OneShotConfig, what: str) -> None:
    if config.mesh_data * config.mesh_model > 1:
        raise ValueError(f"{what} runs on one device; mesh "
                         f"{config.mesh_data}x{config.mesh_model} must be 1x1 with it")


def _check_reconstruction(config: OneShotConfig, pattern) -> None:
    """A reconstruction value, and the settings it cannot run with."""
    if config.reconstruction is None:
        return
    if not isinstance(config.reconstruction, BlockReconstruction):
        raise TypeError(f"reconstruction must be None or BlockReconstruction(...), got "
                        f"{config.reconstruction!r}")
    if pattern.kind == GLOBAL:
        raise ValueError("reconstruction refits each block after its layers are pruned; "
                         "pattern 'global' prunes every kernel at once, before any block runs")
    _check_one_device(config, "reconstruction")


def _check_learn_masks(config: OneShotConfig, pattern) -> None:
    """A mask learner value, and the settings it cannot run with."""
    if config.learn_masks is None:
        return
    if not isinstance(config.learn_masks, MaskLLM):
        raise TypeError(f"learn_masks must be None or MaskLLM(...), got {config.learn_masks!r}")
    if not pattern.is_n_of_m:
        raise ValueError(f"learn_masks chooses among N:M candidate patterns; pattern must be "
                         f"N:M (such as 2:4), got {str(pattern)!r}")
    _check_one_device(config, "learn_masks")


def _check_quantization(config: OneShotConfig) -> None:
    """A quantizer value, and the settings it cannot run with."""
    quantizes = getattr(config.method, "quantizes", False)
    if (quantizes or config.quantization is not None) and config.learn_masks is not None:
        raise ValueError("learn_masks replaces the kernels after every block is pruned, "
                         "quantized or not; quantize the resulting model in a second run")
    if config.quantization is None:
        if quantizes and config.reconstruction is not None:
            raise ValueError(f"method {methods.method_name(config.method)!r} quantizes as it "
                             f"prunes; a reconstruction would move the weights off the grid "
                             f"(quantize after it with a quantizer such as GPTQ instead)")
        return
    if not (hasattr(config.quantization, "quantize_layer")
            and hasattr(config.quantization, "statistic")):
        raise TypeError(f"quantization must be None or a quantizer (statistic, quantize_layer) "
                        f"such as jaxprune.oneshot.GPTQ(spec), got {config.quantization!r}")
    if quantizes:
        raise ValueError(f"method {methods.method_name(config.method)!r} quantizes as it "
                         f"prunes; a second quantization would round twice")
    _check_one_device(config, "quantization")


def _check_quantized_shapes(config: OneShotConfig, chosen) -> None:
    """Every chosen kernel's input size against the quantization grids' group size."""
    specs = [spec for spec in (getattr(config.quantization, "spec", None),
                               getattr(config.method, "quant", None)) if spec is not None]
    for spec in specs:
        for path, leaf in chosen:
            spec.check_layer(leaf.shape[0], path)


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
    if config.allocation is None:
        return
    if not isinstance(config.allocation, owl.OWL):
        raise TypeError(f"allocation must be None (uniform) or owl.OWL(...), got "
                        f"{config.allocation!r}")
    if config.method.statistic is None:
        raise ValueError(f"allocation OWL ranks blocks by their Wanda scores, which need "
                         f"calibration statistics; method "
                         f"{methods.method_name(config.method)!r} collects none")
    if pattern.is_n_of_m or pattern.kind == GLOBAL:
        raise ValueError(f"allocation OWL sets per-block sparsities; pattern must be "
                         f"'unstructured' or 'per_output', got {str(pattern)!r}")


def _layer_targets(model, config: OneShotConfig, pattern) -> tuple[dict, list]:
    """The kernels ``config.layers`` chooses among the model's prunable linears:
    ``({block: [PrunableLinear]}, [(path, leaf)])``."""
    try:
        layer_re = re.compile(config.layers)
    except re.error as err:
        raise ValueError(f"layers {config.layers!r} is not a valid regular expression: {err}"
                         ) from None
    prunable = {t.path: t for t in model.prunable_linears()}
    leaves = paths.leaves_with_paths(nnx.state(model, nnx.Param))
    if config.layers:
        # A filter that reaches past the declared layers is a mistake to name, not to skip.
        chosen = [(p, leaf) for p, leaf in leaves if layer_re.search(p)]
        stray = [p for p, _ in chosen if p not in prunable]
        if stray:
            raise ValueError(f"layers {config.layers!r} matches {stray[0]!r}, which is not the "
                             f"kernel of a block's linear layer (model.prunable_linears())")
    else:
        chosen = [(p, leaf) for p, leaf in leaves if p in prunable]
    if not chosen:
        shown = ", ".join(repr(p) for p in list(prunable)[:6])
        raise ValueError(f"layers {config.layers!r} matches no prunable kernel; their paths "
                         f"look like {shown}")
    targets: dict[int, list] = {}
    for path, leaf in chosen:
        if pattern.is_n_of_m and leaf.shape[0] % pattern.m:
            raise ValueError(f"pattern {pattern} needs the input size of {path!r} divisible by "
                             f"M={pattern.m}, got shape {leaf.shape}")
        targets.setdefault(prunable[path].block, []).append(prunable[path])
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


def plan_oneshot(model, segments: np.ndarray, config: OneShotConfig) -> _Plan:
    """Checks the config against the model and the calibration data, before any work.

    Raises:
      TypeError, ValueError: naming the setting, its value and what is allowed.
    """
    pattern = parse_pattern(config.pattern)
    _check_method(config, pattern)
    _check_reconstruction(config, pattern)
    _check_learn_masks(config, pattern)
    _check_quantization(config)
    sparsity = _planned_sparsity(config, pattern)
    _check_allocation(config, pattern)
    targets, chosen = _layer_targets(model, config, pattern)
    _check_quantized_shapes(config, chosen)
    segments = np.asarray(segments)
    _check_segments(segments, model.config.vocab_size)
    mesh = _check_mesh(config, segments.shape[0], chosen)
    return _Plan(config.method, pattern, sparsity, targets, mesh)


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


@dataclasses.dataclass
class _Pass:
    """The calibration pass as it moves through the blocks.

    Attributes:
      hidden: the current block's input, one array per calibration batch.
      cos, sin: the RoPE tables of the segment length.
      model_stats: a ``ModelStatistic``'s arrays by kernel path, else ``None``.
      block_sparsity: the sparsity asked of each block.
      masks: kept masks of the kernels pruned so far, by path.
      rows: their report rows.
      block_errors: each refit block's error before and after its reconstruction.
      gradients: the current block's regional gradients by linear-layer name (Wanda++).
      quantized: the quantized kernels so far (``qwix.QArray``) by path.
    """

    hidden: list
    cos: jax.Array
    sin: jax.Array
    model_stats: dict | None
    block_sparsity: dict[int, float]
    masks: dict = dataclasses.field(default_factory=dict)
    rows: list = dataclasses.field(default_factory=list)
    block_errors: dict = dataclasses.field(default_factory=dict)
    gradients: dict = dataclasses.field(default_factory=dict)
    quantized: dict = dataclasses.field(default_factory=dict)


def prune_oneshot(model, segments: np.ndarray, config: OneShotConfig = OneShotConfig(), *,
                  progress: bool = True) -> OneShotResult:
    """Prunes a decoder one-shot with calibration data, block by block.

    The protocol: plan (every check, before any work); start the calibration pass (embed the
    segments, and compute a whole-model statistic or OWL's allocation if asked); then for each
    block: calibrate it (the input statistics its method declares), solve its layers (the
    method prunes each kernel), and advance the pass to the next block. A method that needs no
    statistics prunes every kernel without a forward pass.

    Args:
      model: the dense model (left unchanged).
      segments: calibration token ids ``[N, L]``.
      config: the method (a value, ``jaxprune.oneshot.methods``) and settings.
      progress: show progress bars.

    Returns:
      A ``OneShotResult`` with the pruned model, its masks and a per-layer report.

    Raises:
      TypeError, ValueError: for bad settings or data, before any work.
      FloatingPointError: when a SparseGPT solve fails even with raised dampening, or produces
        NaN or Inf, or when a layer's scores are not finite (the message names the layer).

    References:
      Frantar & Alistarh 2023 (SparseGPT) and Sun et al. 2023 (Wanda) for the protocol.
    """
    plan = plan_oneshot(model, segments, config)
    start = time.perf_counter()
    pruned = nnx.clone(model)  # new variables; arrays are shared until replaced
    if plan.mesh is not None:
        _shard_model(pruned, plan)
    quantizer_statistic = getattr(config.quantization, "statistic", None)
    if (plan.method.statistic is None and config.reconstruction is None
            and quantizer_statistic is None):
        run = _prune_without_calibration(pruned, plan)
        for index, linears in plan.targets.items():
            quantize_block(pruned.layers[index], linears, {}, run, config)
    else:
        run = _start_calibration(model, pruned, segments, plan, config, progress)
        name = methods.method_name(plan.method)
        for index in tqdm(range(len(pruned.layers)), desc=f"{name} blocks", unit="block",
                          disable=not progress):
            block, linears = pruned.layers[index], plan.targets.get(index, [])
            dense_out, stats = _calibrate_block(block, linears, run, plan, config)
            _solve_layers(block, linears, stats, run, plan, run.block_sparsity[index]
                          if linears else plan.sparsity)
            refit_block(block, index, linears, dense_out, run, config)
            quantize_block(block, linears, stats, run, config)
            _advance(block, dense_out, run, config)
            if linears:
                logging.info("block %d: pruned %d layers, %.1f s elapsed", index,
                             len(linears), time.perf_counter() - start)
    mask_losses = (_learn_masks(model, pruned, segments, run, plan, config.learn_masks, progress)
                   if config.learn_masks is not None else [])
    result = OneShotResult(pruned, _mask_tree(pruned, run.masks), run.rows, run.block_sparsity,
                           time.perf_counter() - start, run.block_errors, mask_losses,
                           run.quantized)
    return _finish(result, plan, config)


def _start_calibration(model, pruned, segments, plan: _Plan, config: OneShotConfig,
                       progress: bool) -> _Pass:
    """Embeds the calibration batches; computes a whole-model statistic and OWL's per-block
    sparsities when the method and the allocation ask for them."""
    segments = np.asarray(segments, np.int32)
    batches = _calibration_batches(segments, config.batch_size, plan.mesh)
    cos, sin = pruned.rope(segments.shape[1])
    graphdef, state = nnx.split(pruned)
    model_stats = None
    if isinstance(plan.method.statistic, methods.ModelStatistic):
        model_stats = plan.method.statistic.compute(model, segments, plan.paths,
                                                    progress=progress)
    block_sparsity = {i: plan.sparsity for i in plan.targets}
    if config.allocation is not None:
        block_sparsity = _owl_block_sparsity(pruned, graphdef, state, batches, cos, sin, plan,
                                             config.allocation, progress)
    hidden = [_embed(graphdef, state, b) for b in batches]
    return _Pass(hidden, cos, sin, model_stats, block_sparsity)


def _calibrate_block(block, linears, run: _Pass, plan: _Plan, config: OneShotConfig):
    """The dense block's outputs and its layers' input statistics, when the method needs the
    statistics or the order or a reconstruction needs the dense outputs; else
    ``(None, {})``."""
    statistic = plan.method.statistic
    input_statistics = [s for s in (statistic, getattr(config.quantization, "statistic", None))
                        if isinstance(s, methods.InputStatistic)]
    regional = isinstance(statistic, RegionalStatistic)
    needs_inputs = regional or bool(input_statistics)
    needs_outputs = config.order == "dense" or config.reconstruction is not None
    if not linears or not (needs_inputs or needs_outputs):
        return None, {}
    groups = tuple(sorted({t.group for t in linears}))
    with_gram = any(s.with_gram for s in input_statistics)
    if regional:  # taken on the dense block, before any of its layers is pruned
        run.gradients = regional_gradients(block, [t.name for t in linears], run.hidden,
                                           run.cos, run.sin)
    return _collect_block_stats(block, run.hidden, run.cos, run.sin, groups, with_gram)


def _solve_layers(block, linears, stats: dict, run: _Pass, plan: _Plan,
                  sparsity: float) -> None:
    """Prunes each chosen linear of the block in place by the method; records masks and rows."""
    for target in linears:
        if run.model_stats is not None:
            statistic = run.model_stats[target.path]
        elif target.name in run.gradients:
            statistic = RegionalStats(stats[target.group], run.gradients[target.name])
        else:
            statistic = stats.get(target.group)
        pruning, row = _prune_kernel(_linear(block, target.name), target.path, statistic,
                                     sparsity, plan)
        run.masks[target.path] = pruning.keep
        if getattr(pruning, "quantized", None) is not None:
            run.quantized[target.path] = pruning.quantized
        run.rows.append(row)


def refit_block(block, index: int, linears, dense_out, run: _Pass,
                config: OneShotConfig) -> None:
    """With a reconstruction, refits the block's pruned kernels to its dense outputs in place
    (``reconstruct_block``) and records the error before and after."""
    if config.reconstruction is None or not linears:
        return
    kept = {t.name: run.masks[t.path] for t in linears}
    errors = reconstruct_block(block, kept, run.hidden, dense_out, run.cos, run.sin,
                               config.reconstruction)
    run.block_errors[index] = errors
    logging.info("block %d: reconstruction error %.4g -> %.4g", index, *errors)


def quantize_block(block, linears, stats: dict, run: _Pass, config: OneShotConfig) -> None:
    """With a quantizer, quantizes the block's pruned kernels in place keeping their masks
    (not those its method already quantized); records the ``QArray``s and report fields."""
    if config.quantization is None:
        return
    rows = {row["path"]: row for row in run.rows}
    for target in linears:
        if target.path in run.quantized:
            continue
        linear = _linear(block, target.name)
        start = time.perf_counter()
        layer = config.quantization.quantize_layer(
            linear.kernel[...], run.masks[target.path], stats.get(target.group),
            path=target.path)
        linear.kernel[...] = layer.kernel
        run.quantized[target.path] = layer.quantized
        rows[target.path].update(layer.info, quant_seconds=time.perf_counter() - start)


def _learn_masks(model, pruned, segments, run: _Pass, plan: _Plan, settings: MaskLLM,
                 progress: bool) -> list[float]:
    """MaskLLM from the method's masks; the pruned model becomes the dense one under the learned
    masks, and each layer's row says the share of its mask that changed."""
    learned, history = learn_nm_masks(model, np.asarray(segments), run.masks, plan.pattern,
                                      settings, progress=progress)
    dense = dict(paths.leaves_with_paths(nnx.state(model)))
    state = nnx.state(pruned)
    nnx.update(pruned, paths.map_with_path_str(
        lambda p, leaf: jnp.where(learned[p], dense[p], 0).astype(leaf.dtype)
        if p in learned else leaf, state))
    for row in run.rows:
        row["maskllm_changed"] = float(jnp.mean(learned[row["path"]] != run.masks[row["path"]]))
    run.masks.update(learned)
    return history


def _advance(block, dense_out, run: _Pass, config: OneShotConfig) -> None:
    """The next block's inputs: the dense outputs (order "dense"), else the block as it now
    is (pruned if it had targets)."""
    if config.order == "dense" and dense_out is not None:
        run.hidden = dense_out
        return
    block_graphdef, block_state = nnx.split(block)
    run.hidden = [_block_forward(block_graphdef, block_state, h, run.cos, run.sin)
                  for h in run.hidden]


def _prune_kernel(linear, path: str, statistic, sparsity: float,
                  plan: _Plan) -> tuple[methods.LayerPruning, dict]:
    """Prunes one linear layer in place by the plan's method; returns what the method returned
    and the report row."""
    layer_start = time.perf_counter()
    pruning = plan.method.prune_layer(linear.kernel[...], statistic, sparsity=sparsity,
                                      pattern=plan.pattern, path=path)
    linear.kernel[...] = pruning.kernel
    row = {"path": path, **pruning.info, "sparsity": masks.sparsity(pruning.keep),
           "seconds": time.perf_counter() - layer_start}
    return pruning, row


def _calibration_batches(segments: np.ndarray, batch_size: int, mesh) -> list[jax.Array]:
    """The calibration segments in batches, split over the mesh's ``data`` axis if any."""
    batches = [jnp.asarray(segments[i:i + batch_size])
               for i in range(0, len(segments), batch_size)]
    if mesh is not None:
        batches = [jax.device_put(b, NamedSharding(mesh, P("data"))) for b in batches]
    return batches


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
    state, masks = nnx.state(result.model), result.masks
    if jax.process_count() > 1:
        # Under jax.distributed, kernels are split over other processes' devices too: every
        # process fetches the whole values (an all-gather over the processes' collectives).
        state, masks = multihost_utils.process_allgather((state, masks), tiled=True)
    device = jax.local_devices()[0]
    nnx.update(result.model, jax.device_put(state, device))
    result.masks = jax.device_put(masks, device)
    return result


def _mask_tree(model, by_path: dict[str, jax.Array]):
    return paths.map_with_path_str(lambda p, _: by_path.get(p), nnx.state(model))


def _prune_without_calibration(pruned, plan: _Plan) -> _Pass:
    """A method without statistics needs no forward pass: every kernel at once. Global
    selection ranks the scores of all kernels together; other groups go kernel by kernel."""
    run = _Pass([], None, None, None, dict.fromkeys(plan.targets, plan.sparsity))
    if plan.pattern.kind != GLOBAL:
        for index, linears in plan.targets.items():
            _solve_layers(pruned.layers[index], linears, {}, run, plan, plan.sparsity)
        return run
    state = nnx.state(pruned, nnx.Param)
    wanted = plan.paths
    sparsity = paths.map_with_path_str(lambda p, _: plan.sparsity if p in wanted else None, state)
    score_fn = plan.method.score_fn
    select = jax.jit(lambda params: selection.select_masks(
        jax.tree.map(lambda w: score_fn(w, None), params), sparsity, plan.pattern))
    by_path = dict(paths.leaves_with_paths(select(state)))
    run.masks.update(by_path)
    run.rows.extend({"path": p, "sparsity": masks.sparsity(m), "seconds": 0.0}
                    for p, m in by_path.items())
    nnx.update(pruned, masks.apply_masks(state, _mask_tree(pruned, by_path)))
    return run


def _owl_block_sparsity(pruned, graphdef, state, batches, cos, sin, plan: _Plan,
                        allocation: owl.OWL, progress: bool) -> dict[int, float]:
    """OWL's dense pass: outlier ratio of each block's Wanda scores, then the allocation."""
    groups = tuple(sorted({t.group for t in pruned.prunable_linears()}))
    hidden = [_embed(graphdef, state, b) for b in batches]
    ratios = {}
    for index in tqdm(range(len(pruned.layers)), desc="owl ratios", disable=not progress):
        block = pruned.layers[index]
        hidden, stats = _collect_block_stats(block, hidden, cos, sin, groups, False)
        linears = plan.targets.get(index, [])
        if linears:
            block_scores = [criteria.wanda_score(_linear(block, t.name).kernel[...],
                                                 stats[t.group].sq_norms) for t in linears]
            ratios[index] = owl.outlier_ratio(block_scores, allocation.owl_m)
    order = sorted(ratios)
    values = owl.owl_sparsities([ratios[i] for i in order], plan.sparsity,
                                allocation.owl_lambda)
    logging.info("OWL block sparsities: %s", [round(v, 4) for v in values])
    return dict(zip(order, values, strict=True))


def achieved_sparsity(result: OneShotResult) -> float:
    """Fraction of zeros over the pruned kernels (``masks.sparsity`` of the result's masks)."""
    return masks.sparsity(result.masks)


def quantize_model(model, segments: np.ndarray, quantization, *, batch_size: int = 8,
                   progress: bool = True) -> OneShotResult:
    """Quantizes a model as it is (dense, pruned, cut or recovered), keeping its zeros: the
    engine with ``methods.KEEP_NONZERO`` and ``quantization`` (``GPTQ(spec)`` calibrates block
    by block on ``segments``; ``RoundToNearest(spec)`` needs none).

    Returns:
      The ``OneShotResult``: the quantized model, its non-zero masks and ``quantized``.

    Raises:
      TypeError, ValueError: as ``plan_oneshot``, before any work.
    """
    return prune_oneshot(model, segments, _quantize_only(quantization, batch_size),
                         progress=progress)


def check_quantize_model(model, segments: np.ndarray, quantization, *,
                         batch_size: int = 8) -> None:
    """Checks what ``quantize_model`` would check (the grid against every kernel's input
    size, the calibration tokens), without quantizing: for a job that changes the model's
    shapes first (a width cut) and quantizes only after a long distillation.

    Raises:
      TypeError, ValueError: as ``plan_oneshot``.
    """
    plan_oneshot(model, segments, _quantize_only(quantization, batch_size))


def _quantize_only(quantization, batch_size: int) -> OneShotConfig:
    """The engine's config for ``quantize_model``: keep every non-zero weight, quantize."""
    return OneShotConfig(method=methods.KEEP_NONZERO, sparsity=0.0, pattern="unstructured",
                         batch_size=batch_size, quantization=quantization)
