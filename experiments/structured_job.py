"""The structured pruning job: score, cut (depth or width), evaluate, distil, evaluate.

Shared by ``experiments.structured`` (one run, distillation checkpointed and resumable) and
``experiments.sweep`` (the ablation). The cut is a deterministic function of the config and
the calibration text, so a resumed run rebuilds the same student before restoring its
distillation checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from flax import nnx

from experiments import common, train_job
from jaxprune import oneshot, quant, structured, training
from jaxprune.eval import perplexity
from jaxprune.models.gguf_export import check_gguf_export

KINDS = ("none", "depth", "width", "fuse", "search")
# config.cut.kind -> the registry of criteria it takes.
CRITERIA = {"depth": structured.DEPTH_CRITERIA, "fuse": structured.FUSE_CRITERIA,
            "width": structured.WIDTH_CRITERIA, "search": structured.WIDTH_CRITERIA}


def check_config(config) -> None:
    """Checks the fields that need no model, before anything is loaded.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    common.check_eval_config(config)
    common.check_text_config("calibration", config.calibration)
    common.check_int_fields("calibration", config.calibration, {"num_segments": 1, "length": 2})
    cut = config.cut
    if cut.kind not in KINDS:
        raise ValueError(f"config.cut.kind must be one of {list(KINDS)}, got {cut.kind!r}")
    if cut.kind in CRITERIA and cut.criterion not in CRITERIA[cut.kind]:
        raise ValueError(f"config.cut.criterion must be one of {list(CRITERIA[cut.kind])} for "
                         f"a {cut.kind} cut, got {cut.criterion!r}")
    if cut.kind in ("depth", "fuse"):
        common.check_int_fields("cut", cut, {"blocks": 1})
    if cut.kind == "fuse":
        if cut.fusion not in structured.FUSION_METHODS:
            raise ValueError(f"config.cut.fusion must be one of "
                             f"{list(structured.FUSION_METHODS)}, got {cut.fusion!r}")
        common.check_int_fields("cut", cut, {"rank": 1})
    if cut.kind == "search":
        _check_search(cut.search)
    if cut.kind == "width":
        common.check_int_fields("cut", cut, {"heads_per_group": 0, "mlp_channels": 0,
                                             "hidden": 0})
        if not (cut.heads_per_group or cut.mlp_channels or cut.hidden):
            raise ValueError("a width cut needs config.cut.heads_per_group, mlp_channels or "
                             "hidden (the widths to keep; 0 keeps a dimension whole)")
    if not config.distill.temperature > 0:
        raise ValueError(f"config.distill.temperature must be > 0, got "
                         f"{config.distill.temperature!r}")
    if config.distill.enabled or cut.kind == "search":  # the search distils its shortlist
        train_job.check_config(common.copy_with(config, rule="dense"))
    quantizer = quantizer_of(config)
    if common.check_embedding_bits(config) and quantizer is None:
        raise ValueError("config.quant_embedding_bits rounds the embedding table of a "
                         "quantized student; set config.quantize too")


# config.quantize of a structured job: a quantizer after the cut ("joint" prunes; no cut does).
QUANTIZE = ("none", "rtn", "gptq")


def quantizer_of(config):
    """The quantizer ``config.quantize`` names with ``config.quant_settings``, or ``None``.

    Raises:
      ValueError: naming the field, for another name or a bad setting.
    """
    name = config.get("quantize", "none")
    if name not in QUANTIZE:
        raise ValueError(f"config.quantize must be one of {QUANTIZE} after a structured cut, "
                         f"got {name!r}")
    if name == "none":
        return None
    fields = {"quantize": name, **config.quant_settings.to_dict()}
    if fields.pop("aware") and (name != "rtn" or not config.distill.enabled):
        raise ValueError("config.quant_settings.aware=True distils through the grid and then "
                         "rounds to it: it needs config.distill.enabled and "
                         f"config.quantize='rtn', got quantize={name!r}, distill "
                         f"{config.distill.enabled}")
    try:
        return oneshot.registry.from_registry(oneshot.registry.QUANTIZERS, "quantize", fields)
    except ValueError as err:
        raise ValueError(f"{err} (config.quant_settings)") from None


def _check_search(search) -> None:
    """Checks ``config.cut.search`` (the budgeted search's settings)."""
    common.check_int_fields("cut.search", search, {
        "target_params": 1, "hidden_step": 1, "mlp_step": 1, "segments": 1, "shortlist": 1,
        "rank_steps": 1})
    if search.depth_criterion not in structured.DEPTH_CRITERIA or structured.DEPTH_CRITERIA[
            search.depth_criterion].runs:
        allowed = [n for n, c in structured.DEPTH_CRITERIA.items() if not c.runs]
        raise ValueError(f"config.cut.search.depth_criterion must be one of {allowed} (a score "
                         f"per block), got {search.depth_criterion!r}")
    axes = [a for a in search.axes.split(",") if a]
    if not axes or any(a not in structured.SEARCH_AXES for a in axes):
        raise ValueError(f"config.cut.search.axes must be a comma-separated subset of "
                         f"{list(structured.SEARCH_AXES)}, got {search.axes!r}")
    if not 0 < search.tolerance < 1:
        raise ValueError(f"config.cut.search.tolerance must be in (0, 1), got "
                         f"{search.tolerance!r}")


def search_grid(search) -> dict:
    """The keyword settings of ``structured.candidate_shapes`` from ``config.cut.search``."""
    return dict(tolerance=search.tolerance, hidden_step=search.hidden_step,
                mlp_step=search.mlp_step, axes=tuple(a for a in search.axes.split(",") if a))


def check_cut_fits(cut, model_config) -> None:
    """Checks a cut's sizes (a ``config.cut`` section) against the model.

    Raises:
      ValueError: for a cut that removes every block or keeps more than there is.
    """
    c = model_config
    if cut.kind == "depth" and cut.blocks >= c.num_layers:
        raise ValueError(f"config.cut.blocks must be below the model's {c.num_layers} blocks, "
                         f"got {cut.blocks}")
    if cut.kind == "fuse":
        method = fusion_method(cut)
        lowest = 1 if method.keeps_first_block else 0
        # Folded blocks need one kept block below them all; fused pairs two blocks each.
        fold = CRITERIA["fuse"][cut.criterion].fold
        what, need = ("folded blocks", cut.blocks + 1) if fold else ("fusions", 2 * cut.blocks)
        if need > c.num_layers - lowest:
            raise ValueError(f"config.cut.blocks={cut.blocks} {what} need {need} blocks, the "
                             f"model has {c.num_layers - lowest} that config.cut.fusion="
                             f"{cut.fusion!r} may fuse")
        try:  # the method's own limits (rank, norms), on the first pair it could fuse
            method.check(c, lowest, 2)
        except ValueError as error:
            raise ValueError(f"config.cut.fusion={cut.fusion!r}, config.cut.rank={cut.rank}: "
                             f"{error}") from None
    if cut.kind == "search":  # a budget no shape meets fails here, before any scoring
        try:
            structured.candidate_shapes(model_config, cut.search.target_params,
                                        **search_grid(cut.search))
        except ValueError as error:
            raise ValueError(f"config.cut.search: {error}") from None
    if cut.kind == "width":
        per_group = min(h // kv for h, kv in zip(c.num_heads, c.num_kv_heads, strict=True))
        for field, limit in (("heads_per_group", per_group),
                             ("mlp_channels", min(c.intermediate_size)),
                             ("hidden", c.hidden_size)):
            if cut[field] > limit:
                raise ValueError(f"config.cut.{field} keeps {cut[field]}, more than the model's "
                                 f"{limit}")


# Everything the cut depends on; the distillation and evaluation come after it.
_CUT_FIELDS = ("model", "param_dtype", "calibration", "calibration_batch_size", "cut")


def cut_key(config, *extra: str) -> tuple:
    """A hashable key of what the cut model (and ``extra`` fields) depend on: a search's
    winner also on its ranking distillation (the training text and settings, the seed, the
    temperature), not on whether the winner is distilled afterwards."""
    key = _fields_key(config, _CUT_FIELDS + extra)
    if config.cut.kind == "search":
        key += (_fields_key(config, ("train", "seed")), config.distill.temperature)
    return key


def fusion_method(cut):
    """The fusion method a ``config.cut`` section names (``structured.FUSION_METHODS``)."""
    return structured.FUSION_METHODS[cut.fusion](cut)


def _fields_key(config, names) -> tuple:
    """A hashable key for the fields ``names`` of ``config``."""
    return (names, common.config_fingerprint(
        config, ignore=tuple(k for k in config if k not in names)))


def ranking_distiller(config, resources: common.Resources, teacher):
    """The search's short distillation of each shortlisted candidate: ``config.train`` with
    ``config.cut.search.rank_steps`` steps, from ``teacher``, no checkpoints."""
    steps = config.cut.search.rank_steps
    settings = dataclasses.replace(
        train_job.train_settings(config), steps=steps, checkpoint_every=steps,
        warmup_steps=min(config.train.warmup_steps, steps // 4),
        log_every=min(config.train.log_every, steps))
    tokens = resources.text_tokens(config, config.train)
    bos_id = resources.model(config)[1].sequence_start
    return lambda student: training.distill(
        student, teacher, tokens, settings, temperature=config.distill.temperature,
        bos_id=bos_id)[0]


def _search_cut(config, model, segments: np.ndarray, scored, distill_fn):
    """The budgeted search's winning plan and the search's rows."""
    cut, search, batch = config.cut, config.cut.search, config.calibration_batch_size
    width = structured.WIDTH_CRITERIA[cut.criterion]
    options = {o: cut[o] for o in width.options}
    importance = scored(width.scores_key(options), lambda: width.importance(
        model, segments, batch, **options))
    depth_criterion = structured.DEPTH_CRITERIA[search.depth_criterion]
    depth = scored(depth_criterion.scores_key(0), lambda: depth_criterion.scores(
        model, segments, 0, batch))
    plans = structured.plan_structured(
        model.config, structured.StructuredScores(importance, np.asarray(depth)),
        search.target_params, **search_grid(search))
    # The ranking loss: the first calibration segments (never the evaluation text).
    held = np.asarray(segments)[:search.segments]

    def loss_fn(net):
        return float(np.log(perplexity(net, held.ravel(), window=held.shape[1],
                                       batch_size=batch, progress=False).perplexity))

    result = structured.search_structured(model, plans, loss_fn=loss_fn, distill_fn=distill_fn,
                                          shortlist=search.shortlist)
    details = {"search": result.rows, "search_seconds": result.seconds,
               "chosen": result.best.shape.label(), "removed": list(result.best.remove)}
    return result.best, details


def cut_model(config, model, segments: np.ndarray, *, cache=None, distill_fn=None):
    """The student: ``model`` cut as ``config.cut`` says, with the scores that chose it.

    Args:
      config: the job's config (``cut``, ``calibration_batch_size``).
      model: the uncut model.
      segments: the calibration batch, ``[n, length]`` tokens.
      cache: ``Resources.cached`` or None; with it, points of a sweep that share the model,
        calibration and criterion compute the scores once (drop-one perplexity evaluates the
        model once per block, minutes on a CPU).
      distill_fn: for a search cut, the short distillation that ranks the shortlist
        (``ranking_distiller``).

    Returns:
      ``(student, details)``; ``details`` holds the scores and what was removed.
    """
    cut = config.cut
    if cut.kind == "none":
        return model, {}
    batch = config.calibration_batch_size
    criterion = CRITERIA[cut.kind][cut.criterion]

    def scored(name, compute):
        if cache is None:
            return compute()
        return cache(("scores", name, _fields_key(config, _CUT_FIELDS[:4])), compute)

    if cut.kind == "search":  # a sweep's twin points (cut only, distilled) search once
        search = lambda: _search_cut(config, model, segments, scored, distill_fn)  # noqa: E731
        plan, details = search() if cache is None else cache(("search", cut_key(config)), search)
        return structured.cut_structured(model, plan), details
    if cut.kind == "width":
        options = {o: cut[o] for o in criterion.options}
        importance = scored(criterion.scores_key(options), lambda: criterion.importance(
            model, segments, batch, **options))
        plan = structured.plan_width(model.config, importance,
                                     heads_per_group=cut.heads_per_group,
                                     mlp_channels=cut.mlp_channels, hidden=cut.hidden)
        return structured.cut_width(model, plan), {"criterion": cut.criterion}
    scores = scored(criterion.scores_key(cut.blocks), lambda: criterion.scores(
        model, segments, cut.blocks, batch))
    details = {"distances" if criterion.runs or criterion.fuse else "scores": scores.tolist()}
    if cut.kind == "depth":
        plan = criterion.plan(scores, cut.blocks)
        details["removed"] = list(plan.remove)
        return structured.cut_depth(model, plan), details
    method = fusion_method(cut)
    plan = criterion.plan(scores, cut.blocks, lowest=1 if method.keeps_first_block else 0)
    details.update({"folded": list(plan.fold)} if plan.fold else {"fused": list(plan.fuse)})
    return structured.cut_depth(model, plan, fusion=method, segments=segments,
                                batch_size=batch), details


def method_label(config) -> str:
    cut = config.cut
    if cut.kind == "none":
        return "dense"
    if cut.kind == "depth":
        return f"depth -{cut.blocks} ({cut.criterion})"
    if cut.kind == "search":
        return (f"search {cut.search.target_params / 1e6:g}M, {cut.search.axes} "
                f"({cut.criterion}, {cut.search.depth_criterion})")
    if cut.kind == "fuse":
        how = f"low-rank {cut.rank}" if cut.fusion == "lowrank" else cut.fusion
        what = "blocks folded down" if CRITERIA["fuse"][cut.criterion].fold else "pairs"
        return f"fuse {cut.blocks} {what}, {how} ({cut.criterion})"
    parts = [f"{name} {cut[field]}" for field, name in
             (("heads_per_group", "heads/group"), ("mlp_channels", "mlp"),
              ("hidden", "hidden")) if cut[field]]
    return f"width {', '.join(parts)} ({cut.criterion})"


def prepare(config, resources: common.Resources) -> None:
    """Checks everything, loads the model and the texts, before any work."""
    check_config(config)
    common.check_zeroshot_data(config.eval.zeroshot)  # before the model loads
    model, tokenizer = resources.model(config)
    check_cut_fits(config.cut, model.config)
    if config.get("save_gguf"):
        if not config.workdir:
            raise ValueError("config.save_gguf writes WORKDIR/model.gguf: config.workdir is "
                             "required")
        try:  # the cut keeps the family: the dense model answers for the student
            check_gguf_export(model, tokenizer, config.save_gguf)
        except ValueError as err:
            raise ValueError(f"config.save_gguf={config.save_gguf!r}: {err}") from None
    resources.calibration_segments(config)
    resources.evaluation_tokens(config)
    if config.distill.enabled or config.cut.kind == "search":
        train_job.prepare(common.copy_with(config, rule="dense"), resources)


def workdir_bytes(config, resources: common.Resources) -> int:
    """Free space the structured binary needs: distillation checkpoints and the float32
    export, both bounded by the uncut model's size."""
    export = 4 * resources.model(config)[0].config.num_params() if config.save_hf else 0
    checkpoints = train_job.checkpoint_bytes(config, resources) if config.distill.enabled else 0
    return checkpoints + export


def run_point(config, resources: common.Resources, *, workdir: str = "",
              keep_dir: str = "") -> dict:
    """Cuts, evaluates, distils (``config.distill.enabled``: ``config.train.steps`` steps of
    logit distillation from the uncut model) and evaluates again.

    Args:
      config, resources: a structured config (runlocal applied) and the shared resources.
      workdir: a directory claimed for this config, for distillation checkpoints ("": none).
      keep_dir: one where finished zero-shot tasks are kept for a resumed run ("": none).

    Returns:
      ``{"metrics", "timings", "details", "curve"}``; metrics hold the parameter counts
      (total and without embeddings), perplexity before and after distillation, the
      evaluation throughput in tokens/s, and the zero-shot figures of
      ``config.eval.zeroshot`` (``common.zeroshot_metrics``; " before" for the cut model).
    """
    teacher, tokenizer = resources.model(config)
    segments = resources.calibration_segments(config)
    eval_tokens = resources.evaluation_tokens(config)
    start = time.perf_counter()
    distill_fn = (ranking_distiller(config, resources, teacher)
                  if config.cut.kind == "search" else None)
    student, details = cut_model(config, teacher, segments, cache=resources.cached,
                                 distill_fn=distill_fn)
    cut_seconds = time.perf_counter() - start
    check_student_quantizable(config, student, segments)
    metrics, before = _cut_model_metrics(config, resources, student, tokenizer, eval_tokens,
                                         keep_dir)
    timings = {"cut_seconds": cut_seconds}
    curve, after = [], before
    if config.distill.enabled:
        student, curve = _distilled_student(config, resources, teacher, student, segments,
                                            workdir, timings)
        metrics["distill_tokens"] = (config.train.steps * config.train.batch_size
                                     * config.train.seq_len)
        after = common.evaluate(student, eval_tokens, config.eval, tokenizer)
        metrics.update(common.zeroshot_metrics(student, tokenizer, config.eval.zeroshot,
                                               keep_dir=keep_dir))
    metrics["perplexity"] = after.perplexity
    quantizer = quantizer_of(config)
    if quantizer is not None:
        student = quantize_student(config, quantizer, student, segments, eval_tokens,
                                   tokenizer, metrics, timings, keep_dir=keep_dir)
    return {"metrics": metrics, "timings": timings, "details": details, "curve": curve,
            "student": student}


def _cut_model_metrics(config, resources: common.Resources, student, tokenizer, eval_tokens,
                       keep_dir: str):
    """The cut model's size, perplexity and zero-shot figures (" before").

    The distilled point of a sweep follows its cut-only twin: the cut model's evaluation is
    the same computation, so it is kept rather than repeated.

    Returns:
      ``(metrics, evaluation)``: the metrics dict the point reports, and the cut model's
      ``common.evaluate`` result.
    """
    before = resources.cached(("cut-eval", cut_key(config, "eval")),
                              lambda: common.evaluate(student, eval_tokens, config.eval,
                                                      tokenizer))
    zeroshot_before = resources.cached(
        ("cut-zeroshot", cut_key(config, "eval")),
        lambda: common.zeroshot_metrics(student, tokenizer, config.eval.zeroshot, " before",
                                        keep_dir))
    metrics = {
        "method": method_label(config),
        "setting": "distilled" if config.distill.enabled else "cut only",
        "params": student.config.num_params(),
        "params_non_embedding": student.config.num_params(include_embeddings=False),
        "perplexity_before": before.perplexity,
        "tokens_per_second": before.tokens_per_second,
        **zeroshot_before,
    }
    return metrics, before


def _distilled_student(config, resources: common.Resources, teacher, student, segments,
                       workdir: str, timings: dict):
    """``student`` after ``config.train.steps`` steps of logit distillation from ``teacher``
    (quantization-aware under ``config.quant_settings.aware``), resumed from ``workdir``'s
    checkpoints; adds ``distill_seconds`` to ``timings``. Returns it and the loss curve."""
    train_config = common.copy_with(config, rule="dense")
    aware = quantization_aware_student(config, student, segments)
    trainer = train_job.make_trainer(train_config, resources,
                                     model=student if aware is None else aware,
                                     teacher=teacher, temperature=config.distill.temperature)
    distill_start = time.perf_counter()
    curve = train_job.run_with_checkpoints(trainer, workdir)
    timings["distill_seconds"] = time.perf_counter() - distill_start
    plain = (trainer.model() if aware is None
             else training.plain_model(trainer.model(), student))
    return plain, curve


def check_student_quantizable(config, student, segments) -> None:
    """``config.quant_settings``' grid against the cut student's kernels (a width cut sets
    their input sizes), before its evaluation and distillation rather than after them.

    Raises:
      ValueError: naming the kernel whose input size the group size does not divide.
    """
    quantizer = quantizer_of(config)
    if quantizer is not None:
        oneshot.check_quantize_model(student, segments, quantizer,
                                     batch_size=config.calibration_batch_size)


def quantization_aware_student(config, student, segments):
    """With ``config.quant_settings.aware``, the student fake-quantized on the grid for its
    distillation (``training.quantization_aware``); else ``None``."""
    if config.get("quantize", "none") == "none" or not config.quant_settings.aware:
        return None
    return training.quantization_aware(student, quantizer_of(config).spec, segments[:1])


def quantize_student(config, quantizer, student, segments, eval_tokens, tokenizer,
                     metrics: dict, timings: dict, keep_dir: str = ""):
    """Quantizes the (distilled) student keeping its zeros (``oneshot.quantize_model``), and
    its embedding table with ``config.quant_embedding_bits``, and evaluates it: ``perplexity``
    and the zero-shot figures become the quantized model's, ``perplexity_unquantized`` and the
    zero-shot keys suffixed " unquantized" keep the float one's, ``weights_mb`` is the packed
    size; returns the quantized model."""
    start = time.perf_counter()
    done = oneshot.quantize_model(student, segments, quantizer,
                                  batch_size=config.calibration_batch_size)
    model, packed, label = done.model, dict(done.quantized), ""
    if bits := config.get("quant_embedding_bits", 0):
        model, packed[oneshot.EMBEDDING_PATH] = oneshot.quantize_embedding(model, bits)
        label = f"+emb-int{bits}"
    timings["quantize_seconds"] = time.perf_counter() - start
    evaluation = common.evaluate(model, eval_tokens, config.eval, tokenizer)
    aware = " (quantization-aware distillation)" if config.quant_settings.aware else ""
    metrics.update(
        method=f"{metrics['method']} + {config.quantize} {quantizer.spec.label}{label}{aware}",
        perplexity_unquantized=metrics["perplexity"], perplexity=evaluation.perplexity,
        weights_mb=quant.model_storage_bytes(nnx.state(model, nnx.Param), packed) / 2**20)
    for key in [k for k in metrics if k.startswith("zeroshot ") and not k.endswith(" before")]:
        metrics[f"{key} unquantized"] = metrics.pop(key)
    # Its own keep folder: the float student's finished tasks sit in keep_dir's.
    metrics.update(common.zeroshot_metrics(
        model, tokenizer, config.eval.zeroshot,
        keep_dir=os.path.join(keep_dir, "quantized") if keep_dir else ""))
    return model
