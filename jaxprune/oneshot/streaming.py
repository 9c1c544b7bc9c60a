"""One-shot pruning of a model larger than memory: one block at a time, from disk to disk.

The model is opened lazily (``jaxprune.models.LazyModel``: safetensors read on demand). The
calibration pass is the in-memory engine's (``prune_oneshot``), block for block and with the
same programs: embed the segments; then for each block, read it from disk, collect its input
statistics, prune its layers, write it out and run it forward for the next block's inputs,
before the next block is read. Device memory holds one block, its statistics and the
calibration activations; host memory holds the same, never the whole model.

The output is a Hugging Face directory (one safetensors shard per block, then one for the
embedding, final norm and head, and the index), loadable by ``jaxprune.models.load`` and by
``transformers``; beside the shards, ``masks-NNNNN.safetensors`` hold each block's masks and
``block-NNNNN.json`` its report rows. Work goes into ``OUT.partial``; a block's JSON, written
last, marks it finished. A killed run resumes at the first unfinished block (earlier blocks
are read back and run forward, not pruned again), and gives the same bytes as a run that was
never stopped; ``OUT.partial`` is renamed to ``OUT`` at the end.

References:
  Frantar & Alistarh 2023 (SparseGPT): pruning OPT-175B one block at a time on one GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import numpy as np
from absl import logging
from flax import nnx
from tqdm.auto import tqdm

from jaxprune import workdir
from jaxprune.models import EXPORT_DTYPES, LazyModel
from jaxprune.models.lazy import block_hf_tensor_sources, load_block_file
from jaxprune.models.safetensors_file import TensorSource, read_safetensors, write_safetensors
from jaxprune.models.weights import hf_tensor_sources
from jaxprune.oneshot import engine, methods
from jaxprune.oneshot.engine import OneShotConfig

STATE_FILE = "streaming.json"


@dataclasses.dataclass
class StreamedResult:
    """What ``prune_streamed`` made.

    Attributes:
      directory: the pruned model, a Hugging Face directory.
      layers: one report row per pruned kernel, in order (as ``OneShotResult.layers``).
      block_sparsity: the sparsity asked of each pruned block.
      resumed_at: the first block this call pruned (0: a run from the start).
      seconds: wall time of this call.
    """

    directory: str
    layers: list[dict]
    block_sparsity: dict[int, float]
    resumed_at: int
    seconds: float


def plan_streamed(source: LazyModel, segments: np.ndarray, config: OneShotConfig):
    """``plan_oneshot`` on the model's shapes, plus what streaming cannot do; before any work.

    Raises:
      TypeError, ValueError: as ``plan_oneshot``; for a whole-model statistic (Fisher), OWL's
        allocation, the ``global`` pattern or a device mesh, which each need every block at
        once.
    """
    plan = engine.plan_oneshot(source.abstract(), segments, config)
    reasons = []
    if isinstance(plan.method.statistic, methods.ModelStatistic):
        reasons.append(f"method {methods.method_name(plan.method)!r} needs a whole-model "
                       f"{plan.method.statistic.name}")
    if config.allocation is not None:
        reasons.append("allocation OWL ranks every block before pruning any")
    if plan.pattern.kind == "global":
        reasons.append("pattern 'global' ranks every kernel at once")
    if config.learn_masks is not None:
        reasons.append("learn_masks trains every block's masks together")
    if config.quantization is not None or getattr(plan.method, "quantizes", False):
        reasons.append("quantization is not streamed yet: the blocks are written as float "
                       "kernels, without their codes")
    if plan.mesh is not None:
        reasons.append(f"mesh {config.mesh_data}x{config.mesh_model} (streaming runs on one "
                       f"device; use mesh_data=mesh_model=1)")
    if reasons:
        raise ValueError(f"streamed pruning holds one block at a time: {'; '.join(reasons)}")
    return plan


def prune_streamed(source: LazyModel, segments: np.ndarray, out_dir: str,
                   config: OneShotConfig, *, tokenizer=None,
                   fingerprint: str = "", progress: bool = True) -> StreamedResult:
    """Prunes ``source`` one-shot, block by block from disk to the directory ``out_dir``.

    Args:
      source: the dense model, opened lazily (``models.open_model``).
      segments: calibration token ids ``[N, L]``.
      out_dir: where the pruned Hugging Face directory goes; must not exist.
      config: the method and settings, as for ``prune_oneshot`` (one device, no OWL).
      tokenizer: written into the output directory when given.
      fingerprint: what identifies this computation (the job's config fingerprint); an
        ``OUT.partial`` left by another fingerprint is refused, not resumed.
      progress: show a progress bar.

    Returns:
      A ``StreamedResult``.

    Raises:
      FileExistsError: when ``out_dir`` exists, or ``OUT.partial`` holds another fingerprint.
      TypeError, ValueError: as ``plan_streamed``, before any work.
      FloatingPointError: as ``prune_oneshot``.
    """
    plan = plan_streamed(source, segments, config)
    if os.path.exists(out_dir):
        raise FileExistsError(f"output directory already exists: {out_dir}")
    staging = out_dir.rstrip("/") + ".partial"
    done = _open_staging(staging, fingerprint, source.config.num_layers)
    start = time.perf_counter()
    shell = source.shell()
    run = engine._start_calibration(shell, shell, segments, plan, config, progress)
    blocks = range(source.config.num_layers)
    for index in tqdm(blocks, desc=f"{methods.method_name(plan.method)} blocks (streamed)",
                      unit="block", disable=not progress):
        if index < done:
            _replay_block(source, staging, index, run, plan, config)
        else:
            _prune_and_write_block(source, staging, index, run, plan, config)
            logging.info("block %d streamed, %.1f s elapsed", index, time.perf_counter() - start)
    _finish_directory(staging, out_dir, shell, source, tokenizer)
    rows = [row for i in blocks for row in _read_block_record(out_dir, i)["rows"]]
    return StreamedResult(out_dir, rows, run.block_sparsity, done,
                          time.perf_counter() - start)


def _open_staging(staging: str, fingerprint: str, num_blocks: int) -> int:
    """Creates ``OUT.partial`` or checks the one there; returns how many blocks it finished
    (the leading run of blocks with a record)."""
    record_path = os.path.join(staging, STATE_FILE)
    # A run killed before its record was written finished no block: it starts afresh.
    if os.path.isfile(record_path):
        with open(record_path) as f:
            recorded = json.load(f)
        if recorded != {"fingerprint": fingerprint, "blocks": num_blocks}:
            raise FileExistsError(f"{staging} holds a streamed run of another configuration "
                                  f"({recorded}); remove it to start again")
        done = 0
        while done < num_blocks and os.path.isfile(_record_path(staging, done)):
            done += 1
        logging.info("resuming the streamed run in %s at block %d", staging, done)
        return done
    os.makedirs(staging, exist_ok=True)
    workdir.write_atomic(record_path, json.dumps(
        {"fingerprint": fingerprint, "blocks": num_blocks}).encode())
    return 0


def _prune_and_write_block(source: LazyModel, staging: str, index: int, run, plan,
                           config: OneShotConfig) -> None:
    """Reads block ``index``, prunes it as the in-memory engine does, writes it out (weights,
    masks, then the record) and moves the calibration pass past it."""
    block, linears = source.block(index), plan.targets.get(index, [])
    calibrated = plan.method.statistic is not None or config.reconstruction is not None
    dense_out, stats = (engine._calibrate_block(block, linears, run, plan, config)
                        if calibrated else (None, {}))
    rows_before = len(run.rows)
    engine._solve_layers(block, linears, stats, run, plan,
                         run.block_sparsity.get(index, plan.sparsity))
    engine.refit_block(block, index, linears, dense_out, run, config)
    masks = {t.path: run.masks.pop(t.path) for t in linears}  # on disk from here, not in memory
    dtype = EXPORT_DTYPES[_dtype_name(source)]
    _save_safetensors(os.path.join(staging, _shard_name(index, source)),
                      block_hf_tensor_sources(block, index, dtype))
    _save_safetensors(os.path.join(staging, _masks_name(index)),
                      {path: (tuple(m.shape), np.dtype(m.dtype), functools.partial(np.asarray, m))
                       for path, m in masks.items()})
    workdir.write_atomic(_record_path(staging, index), json.dumps(
        {"rows": run.rows[rows_before:]}, indent=1).encode())
    if calibrated:
        engine._advance(block, dense_out, run, config)


def _replay_block(source: LazyModel, staging: str, index: int, run, plan,
                  config: OneShotConfig) -> None:
    """Moves the calibration pass past a block a killed run finished: the inputs of the next
    block are the written (pruned) block's outputs, or the dense block's for order "dense"."""
    if plan.method.statistic is None:
        return
    if config.order == "dense":
        block = source.block(index)
    else:
        block = load_block_file(source, index, os.path.join(staging, _shard_name(index, source)))
    engine._advance(block, None, run, config)


def _finish_directory(staging: str, out_dir: str, shell, source: LazyModel, tokenizer) -> None:
    """The shell's shard, the index, ``config.json`` and the tokenizer; then the rename."""
    name = _dtype_name(source)
    last = _shard_name(source.config.num_layers, source)
    _save_safetensors(os.path.join(staging, last),
                      hf_tensor_sources(nnx.state(shell, nnx.Param), EXPORT_DTYPES[name]))
    weight_map, total = {}, 0
    for index in range(source.config.num_layers + 1):
        shard = _shard_name(index, source)
        tensors = read_safetensors(os.path.join(staging, shard))  # the header only
        for tensor in tensors:
            weight_map[tensor] = shard
            total += int(np.prod(tensors.shape(tensor))) * tensors.dtype(tensor).itemsize
    workdir.write_atomic(os.path.join(staging, "model.safetensors.index.json"), json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
        indent=2).encode())
    workdir.write_atomic(os.path.join(staging, "config.json"), json.dumps(
        source.config.to_hf_dict(torch_dtype=name), indent=2).encode())
    if tokenizer is not None:
        tokenizer.save(os.path.join(staging, "tokenizer.json"))
    os.replace(staging, out_dir)


def _read_block_record(directory: str, index: int) -> dict:
    with open(_record_path(directory, index)) as f:
        return json.load(f)


def _save_safetensors(path: str, tensors: dict[str, TensorSource]) -> None:
    """Writes a safetensors file atomically (a kill leaves the old file or none), one tensor in
    host memory at a time."""
    workdir.write_atomic(path, lambda f: write_safetensors(f, tensors, {"format": "pt"}))


def _dtype_name(source: LazyModel) -> str:
    dtype = np.dtype(source.param_dtype)
    return next((name for name, d in EXPORT_DTYPES.items() if np.dtype(d) == dtype), "float32")


def _shard_name(index: int, source: LazyModel) -> str:
    """Hugging Face's shard names: block ``index`` in shard ``index + 1``, the shell last."""
    return f"model-{index + 1:05d}-of-{source.config.num_layers + 1:05d}.safetensors"


def _masks_name(index: int) -> str:
    return f"masks-{index:05d}.safetensors"


def _record_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"block-{index:05d}.json")


def _mask_shards(directory: str):
    """Each block's masks file of a streamed run, in block order, headers read only."""
    for name in sorted(os.listdir(directory)):
        if name.startswith("masks-"):
            yield read_safetensors(os.path.join(directory, name))


def read_streamed_masks(directory: str) -> dict[str, np.ndarray]:
    """Every pruned kernel's mask of a streamed run (finished or not), by model path
    (``layers/3/mlp/up_proj/kernel``), ``[in, out]`` booleans as the engine's masks."""
    masks = {}
    for shard in _mask_shards(directory):
        masks.update(shard)
    return masks


def streamed_sparsity(directory: str) -> float:
    """Fraction of zeros over the pruned kernels of a streamed run, counted one block's masks
    at a time (all masks at once take a byte per pruned weight)."""
    kept = total = 0
    for shard in _mask_shards(directory):
        for mask in shard.values():
            kept += int(np.count_nonzero(mask))
            total += mask.size
    return 1.0 - kept / total if total else 0.0
