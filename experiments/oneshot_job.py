"""The one-shot pruning job: checks, preparation and one run (prune, then evaluate).

Shared by ``experiments.prune`` (one job) and ``experiments.sweep`` (many jobs in a process).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from flax import nnx

from experiments import common, train_job
from jaxprune import _checks, models, oneshot, quant, training
from jaxprune.eval.perplexity import streamed_perplexity
from jaxprune.models.gguf_export import TENSOR_TYPES, check_gguf_export
from jaxprune.patterns import parse_pattern

# config.method for evaluating the model as loaded, without pruning (a sweep's baseline row),
# or quantizing it as it is (with config.quantize).
DENSE = oneshot.registry.DENSE


# The config's fields that are the job's, not the pruning settings': everything else at the
# top level is read by ``oneshot.settings_from_config`` (tests/test_experiments.py keeps both
# sides equal).
JOB_FIELDS = ("model", "param_dtype", "calibration", "eval", "num_cpu_devices", "distributed",
              "stream", "evaluate_dense", "workdir", "overwrite", "save_checkpoint", "save_hf",
              "save_gguf", "save_compressed", "recover", "lora_rank", "lora_alpha",
              "lora_layers", "lora_seed", "train", "quant_embedding_bits", "runlocal",
              "runlocal_overrides")
# config.recover: what runs between pruning and quantization.
RECOVERIES = ("none", "lora")
# The fields that save the pruned model (each needs config.workdir).
SAVE_FIELDS = ("save_checkpoint", "save_hf", "save_gguf", "save_compressed")
# Where a streamed run (config.stream=True) writes the pruned model, under the workdir.
STREAMED_DIR = "hf"


def oneshot_settings(config) -> oneshot.OneShotConfig:
    """The library's settings from the experiment config, converted in one place.

    Raises:
      ValueError: naming the field, for an unknown method or allocation or a bad option.
    """
    return oneshot.settings_from_config(config)


def runs_engine(config) -> bool:
    """Whether the job runs the one-shot engine: to prune, or to quantize a dense model."""
    return config.method != DENSE or config.quantize != "none"


def check_config(config) -> None:
    """Checks what can be checked before loading anything.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    common.check_eval_config(config)
    common.check_text_config("calibration", config.calibration)
    common.check_int_fields("calibration", config.calibration, {"num_segments": 1, "length": 1})
    if config.method != DENSE and config.method not in oneshot.registry.METHODS:
        raise ValueError(f"config.method must be {DENSE!r} or one of "
                         f"{sorted(oneshot.registry.METHODS)}, got {config.method!r}")
    check_pattern_and_sparsity(config)
    if runs_engine(config):
        oneshot_settings(config)  # the method's and the allocation's own option checks
    saving = [name for name in SAVE_FIELDS if config.get(name)]
    if config.get("save_compressed") and config.quantize == "none":
        raise ValueError("config.save_compressed=True writes quantized weights: set "
                         "config.quantize (rtn, gptq or joint)")
    if config.get("save_gguf") and config.save_gguf not in TENSOR_TYPES:
        raise ValueError(f"config.save_gguf must be '' (no GGUF) or one of {TENSOR_TYPES}, "
                         f"got {config.save_gguf!r}")
    if saving and not config.workdir:
        raise ValueError(f"config.workdir is required to save the pruned model "
                         f"(config.{saving[0]}={config[saving[0]]!r})")
    if config.get("save_checkpoint") and not runs_engine(config):
        raise ValueError("config.method 'dense' without config.quantize changes nothing: the "
                         "checkpoint would hold the model's own weights "
                         "(config.save_checkpoint=True); save_hf and save_gguf export it")
    if config.get("stream"):
        check_stream_config(config)
    check_recovery_config(config)
    check_embedding_quantization(config)


def check_embedding_quantization(config) -> None:
    """``config.quant_embedding_bits``, before loading anything.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    if not common.check_embedding_bits(config):
        return
    if not runs_engine(config):
        raise ValueError("config.quant_embedding_bits quantizes the embedding of a pruned or "
                         "quantized model; with config.method 'dense' set config.quantize too")
    if config.get("save_compressed"):
        raise ValueError("config.quant_embedding_bits with config.save_compressed=True: the "
                         "compressed-tensors checkpoint stores embeddings in float")
    if config.get("stream"):
        raise ValueError("config.quant_embedding_bits does not apply with config.stream=True")


def check_recovery_config(config) -> None:
    """``config.recover`` and its settings, before loading anything.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    recover = config.get("recover", "none")
    if recover not in RECOVERIES:
        raise ValueError(f"config.recover must be one of {RECOVERIES}, got {recover!r}")
    if recover == "none":
        return
    if config.method == DENSE:
        raise ValueError("config.recover='lora' recovers a pruned model; config.method 'dense' "
                         "prunes nothing")
    if config.quantize == oneshot.registry.JOINT:
        raise ValueError("config.recover='lora' with config.quantize='joint': the joint sweep "
                         "quantizes while it prunes, and recovery would move the weights off "
                         "the grid; use config.quantize='gptq', which runs after recovery")
    if config.get("stream"):
        raise ValueError("config.recover='lora' does not apply with config.stream=True")
    _checks.check_int("config.lora_rank", config.lora_rank, minimum=1)
    _checks.check_real("config.lora_alpha", config.lora_alpha, minimum=0.0, strict=True)
    _checks.check_int("config.lora_seed", config.lora_seed, minimum=0)
    train_job.check_train_section(config.train)


def check_stream_config(config) -> None:
    """What a streamed run (``config.stream=True``) needs and cannot do, before loading.

    Raises:
      ValueError: naming the field and why.
    """
    if not config.workdir:
        raise ValueError(f"config.stream=True writes the pruned model to "
                         f"WORKDIR/{STREAMED_DIR} as it goes: config.workdir is required")
    if config.quantize != "none":
        raise ValueError(f"config.quantize={config.quantize!r} does not apply with "
                         f"config.stream=True (the streamed engine writes float kernels)")
    for name in (*SAVE_FIELDS, "distributed"):
        if config.get(name):
            raise ValueError(f"config.{name}=True does not apply with config.stream=True (one "
                             f"device; the pruned model is written to WORKDIR/{STREAMED_DIR} "
                             f"block by block)")


def check_pattern_and_sparsity(config) -> None:
    """Checks ``config.pattern`` and that ``config.sparsity`` agrees with an N:M pattern.

    Raises:
      ValueError: naming both fields and the value to type.
    """
    try:
        pattern = parse_pattern(config.pattern)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.pattern: {err}") from None
    if not pattern.is_n_of_m and not 0 <= config.sparsity < 1:
        raise ValueError(f"config.sparsity must be in [0, 1) (1 would remove everything), got "
                         f"{config.sparsity!r}")
    if pattern.is_n_of_m and abs(config.sparsity - pattern.sparsity) > 1e-9:
        raise ValueError(f"config.pattern={config.pattern!r} keeps {pattern.n} of every "
                         f"{pattern.m} weights, so config.sparsity must be 1 - N/M = "
                         f"{pattern.sparsity!r}, got {config.sparsity!r}; add "
                         f"--config.sparsity={pattern.sparsity!r}")


def workdir_bytes(config, resources: common.Resources) -> int:
    """Free space the saved models take: the orbax checkpoint (parameters and byte masks) and
    the float32 Hugging Face export; for a streamed run, its directory (parameters in their
    dtype and byte masks)."""
    params = resources.model(config)[0].config.num_params()
    if config.get("stream"):
        return 0 if config.method == DENSE else params * (
            np.dtype(common.PARAM_DTYPES[config.param_dtype]).itemsize + 1)
    return (2 * 4 * params if config.get("save_checkpoint") else 0) + (
        4 * params if config.get("save_hf") else 0) + (
        4 * params if config.get("save_gguf") else 0) + (
        4 * params if config.get("save_compressed") else 0)


def setting_label(config) -> str:
    """The column a point belongs to in a paper-style table: "dense", "2:4" or "50%"."""
    if config.method == DENSE:
        return DENSE
    if ":" in config.pattern:
        return config.pattern
    return f"{config.sparsity:.0%}"


def prepare(config, resources: common.Resources) -> None:
    """Checks ``config`` and everything it names (model, texts, layer plan) before any work.

    Raises:
      ValueError, TypeError, FileNotFoundError: naming the field and the value.
    """
    check_config(config)
    common.check_zeroshot_data(config.eval.zeroshot)  # before the model loads
    model, tokenizer = resources.model(config)
    segments = resources.calibration_segments(config)
    if config.get("save_gguf"):
        try:
            check_gguf_export(model, tokenizer, config.save_gguf)
        except ValueError as err:
            raise ValueError(f"config.save_gguf={config.save_gguf!r}: {err}") from None
    if config.get("save_compressed"):
        try:
            model.config.to_hf_dict()
        except ValueError as err:
            raise ValueError(f"config.save_compressed=True: a compressed-tensors checkpoint "
                             f"is a Hugging Face directory, which cannot hold this model: "
                             f"{err}") from None
    if runs_engine(config):
        plan = oneshot.plan_streamed if config.get("stream") else oneshot.plan_oneshot
        plan(model, segments, oneshot_settings(config))
    if config.get("recover", "none") != "none":
        tokens = resources.text_tokens(config, config.train)
        if tokens.size < config.train.seq_len + 2:
            raise ValueError(f"config.train: the training text has {tokens.size} tokens, "
                             f"fewer than config.train.seq_len + 2 = {config.train.seq_len + 2}")
        training.lora.check_lora_settings(model, rank=config.lora_rank, alpha=config.lora_alpha,
                                          layers=config.lora_layers)
    resources.evaluation_tokens(config)


def run_point(config, resources: common.Resources, *, keep_dir: str = "") -> dict:
    """Prunes and evaluates the model of ``config`` (or only evaluates it, method "dense").

    Args:
      config: a one-shot config (configs/oneshot_base.py), runlocal already applied.
      resources: loaded models and texts, shared between calls.
      keep_dir: a folder owned by this config, where finished zero-shot tasks are kept for a
        resumed run (``common.zeroshot_metrics``); empty: none kept.

    Returns:
      ``{"metrics": ..., "timings": ..., "result": ...}``: metrics depend only on the config
      (method, pattern, setting, achieved sparsity, perplexity, mean NLL, with a
      reconstruction the median cut of the block errors (``oneshot.median_error_cut``), and
      the zero-shot figures of ``config.eval.zeroshot``, ``common.zeroshot_metrics``);
      timings are wall seconds; result is the ``OneShotResult`` (None for "dense").
    """
    if config.get("stream"):
        return run_streamed_point(config, resources, keep_dir)
    model, tokenizer = resources.model(config)
    segments = resources.calibration_segments(config)
    eval_tokens = resources.evaluation_tokens(config)
    start = time.perf_counter()
    result, curve, embedding = None, [], {}
    if runs_engine(config):
        settings = oneshot_settings(config)
        recovering = config.get("recover", "none") != "none"
        if recovering:  # quantized after the recovery instead
            settings = dataclasses.replace(settings, quantization=None)
        result = oneshot.prune_oneshot(model, segments, settings)
        if recovering:
            result, curve = recover_and_quantize(config, resources, result, keep_dir)
        result, embedding = quantize_embedding(config, result)
        model = result.model
    prune_seconds = time.perf_counter() - start
    evaluation = common.evaluate(model, eval_tokens, config.eval, tokenizer)
    metrics = _metrics(config, result, oneshot.achieved_sparsity(result) if result else 0.0,
                       evaluation)
    # The parameters' bytes: quantized kernels packed, 2:4 kernels in the 2:4 formats, the
    # rest in half precision.
    metrics["weights_mb"] = quant.model_storage_bytes(
        nnx.state(model, nnx.Param), {**result.quantized, **embedding} if result else {}
    ) / 2**20
    if result and result.block_errors:
        metrics["recon_error_cut"] = oneshot.median_error_cut(result.block_errors)
    metrics.update(common.zeroshot_metrics(model, tokenizer, config.eval.zeroshot,
                                           keep_dir=keep_dir))
    timings = {"prune_seconds": prune_seconds,
               "eval_seconds": time.perf_counter() - start - prune_seconds}
    return {"metrics": metrics, "timings": timings, "result": result, "curve": curve}


def quantize_embedding(config, result):
    """``config.quant_embedding_bits``: the result with its model's embedding table rounded,
    and ``{path: QArray}`` of the table ({} while the field is 0)."""
    bits = config.get("quant_embedding_bits", 0)
    if not bits:
        return result, {}
    model, table = oneshot.quantize_embedding(result.model, bits)
    return dataclasses.replace(result, model=model), {oneshot.EMBEDDING_PATH: table}


def recover_and_quantize(config, resources: common.Resources, result, keep_dir: str = ""):
    """``config.recover="lora"``: the pruned model distilled from the dense one through masked
    LoRA (``training.lora_recover``; its zeros kept), then quantized by ``config.quantize``'s
    quantizer keeping them (``oneshot.quantize_model``).

    Args:
      config, resources: the job's config and loaded inputs.
      result: the ``OneShotResult`` of pruning (without quantization).
      keep_dir: a folder owned by this config; the LoRA checkpoints go to ``KEEP_DIR/lora``
        and a killed run resumes from them ("": none).

    Returns:
      ``(result with the final model and its quantized kernels, loss curve)``.
    """
    dense, tokenizer = resources.model(config)
    settings = training.TrainSettings.from_config(config.train, config.lora_seed)
    recovered, curve = training.lora_recover(
        result.model, resources.text_tokens(config, config.train), settings, teacher=dense,
        rank=config.lora_rank, alpha=config.lora_alpha, layers=config.lora_layers,
        checkpoint_dir=os.path.join(keep_dir, "lora") if keep_dir else "",
        bos_id=tokenizer.sequence_start)
    quantized = {}
    quantizer = oneshot_settings(config).quantization
    if quantizer is not None:
        done = oneshot.quantize_model(recovered, resources.calibration_segments(config),
                                      quantizer, batch_size=config.batch_size)
        recovered, quantized = done.model, done.quantized
    return dataclasses.replace(result, model=recovered, quantized=quantized), curve


def run_streamed_point(config, resources: common.Resources, keep_dir: str = "") -> dict:
    """``run_point`` one block at a time from disk (``config.stream=True``): the model opened
    lazily is pruned into ``WORKDIR/hf`` (``oneshot.prune_streamed``, resuming a killed run of
    this config) and evaluated from there (``eval.streamed_perplexity``, and the zero-shot
    tasks scored a block at a time); ``result`` is the ``StreamedResult``."""
    source, tokenizer = resources.model(config)
    segments = resources.calibration_segments(config)
    eval_tokens = resources.evaluation_tokens(config)
    start = time.perf_counter()
    result, sparsity = None, 0.0
    if config.method != DENSE:
        out = os.path.join(config.workdir, STREAMED_DIR)
        result = oneshot.prune_streamed(source, segments, out, oneshot_settings(config),
                                        tokenizer=tokenizer,
                                        fingerprint=common.config_fingerprint(config))
        source = models.open_hf_dir(out, param_dtype=source.param_dtype)[0]
        sparsity = oneshot.streamed_sparsity(out)
    prune_seconds = time.perf_counter() - start
    e = config.eval
    evaluation = streamed_perplexity(source, eval_tokens, window=e.window,
                                     batch_size=e.batch_size, max_windows=e.max_windows,
                                     bos_id=tokenizer.sequence_start)
    metrics = _metrics(config, result, sparsity, evaluation)
    metrics.update(common.zeroshot_metrics(source, tokenizer, config.eval.zeroshot,
                                           keep_dir=keep_dir))
    timings = {"prune_seconds": prune_seconds,
               "eval_seconds": time.perf_counter() - start - prune_seconds}
    return {"metrics": metrics, "timings": timings, "result": result}


def _metrics(config, result, sparsity: float, evaluation) -> dict:
    """A results row's figures; they depend only on the config."""
    method = config.method
    if result:
        extras = [config.refine, "permute" if config.permute else "none",
                  "owl" if config.allocation == "owl" else "none",
                  "recon" if config.reconstruction != "none" else "none",
                  "maskllm" if config.learn_masks != "none" else "none",
                  config.get("recover", "none"), quant_label(config),
                  f"emb-int{config.quant_embedding_bits}"
                  if config.get("quant_embedding_bits") else "none"]
        method += "".join(f"+{extra}" for extra in extras if extra != "none")
    return {
        "method": method,
        "pattern": config.pattern if config.method != DENSE else "-",
        "setting": setting_label(config),
        "sparsity": sparsity,
        "perplexity": evaluation.perplexity,
        "mean_nll": evaluation.mean_nll,
    }


def quant_label(config) -> str:
    """``gptq-int4-g128-sym``-style: the quantizer and its grid, or "none"."""
    if config.quantize == "none":
        return "none"
    spec = oneshot.quantizers.quant_spec(config.quant_bits, config.quant_group_size,
                                         config.quant_symmetric)
    return f"{config.quantize}-{spec.label}"
