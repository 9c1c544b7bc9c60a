"""The structured pruning job: score, cut (depth or width), evaluate, distil, evaluate.

Shared by ``experiments.structured`` (one run, distillation checkpointed and resumable) and
``experiments.sweep`` (the ablation). The cut is a deterministic function of the config and
the calibration text, so a resumed run rebuilds the same student before restoring its
distillation checkpoint.
"""

from __future__ import annotations

import time

import numpy as np

from experiments import common, train_job
from jaxprune import structured

KINDS = ("none", "depth", "width", "fuse")
# config.cut.kind -> the registry of criteria it takes.
CRITERIA = {"depth": structured.DEPTH_CRITERIA, "fuse": structured.FUSE_CRITERIA,
            "width": structured.WIDTH_CRITERIA}


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
    if cut.kind == "width":
        common.check_int_fields("cut", cut, {"heads_per_group": 0, "mlp_channels": 0,
                                             "hidden": 0})
        if not (cut.heads_per_group or cut.mlp_channels or cut.hidden):
            raise ValueError("a width cut needs config.cut.heads_per_group, mlp_channels or "
                             "hidden (the widths to keep; 0 keeps a dimension whole)")
    if not config.distill.temperature > 0:
        raise ValueError(f"config.distill.temperature must be > 0, got "
                         f"{config.distill.temperature!r}")
    if config.distill.enabled:
        train_job.check_config(common.copy_with(config, rule="dense"))


def check_cut_fits(cut, model_config) -> None:
    """Checks a cut's sizes (a ``config.cut`` section) against the model.

    Raises:
      ValueError: for a cut that removes every block or keeps more than there is.
    """
    c = model_config
    if cut.kind == "depth" and cut.blocks >= c.num_layers:
        raise ValueError(f"config.cut.blocks must be below the model's {c.num_layers} blocks, "
                         f"got {cut.blocks}")
    if cut.kind == "fuse" and 2 * cut.blocks > c.num_layers:
        raise ValueError(f"config.cut.blocks={cut.blocks} fusions need {2 * cut.blocks} blocks, "
                         f"the model has {c.num_layers}")
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


def _fields_key(config, names) -> tuple:
    """A hashable key for the fields ``names`` of ``config``."""
    return (names, common.config_fingerprint(
        config, ignore=tuple(k for k in config if k not in names)))


def cut_model(config, model, segments: np.ndarray, *, cache=None):
    """The student: ``model`` cut as ``config.cut`` says, with the scores that chose it.

    Args:
      config: the job's config (``cut``, ``calibration_batch_size``).
      model: the uncut model.
      segments: the calibration batch, ``[n, length]`` tokens.
      cache: ``Resources.cached`` or None; with it, points of a sweep that share the model,
        calibration and criterion compute the scores once (drop-one perplexity evaluates the
        model once per block, minutes on a CPU).

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
    plan = criterion.plan(scores, cut.blocks)
    details = {"distances" if criterion.runs or criterion.fuse else "scores": scores.tolist()}
    if plan.fuse:
        details["fused"] = list(plan.fuse)
    else:
        details["removed"] = list(plan.remove)
    return structured.cut_depth(model, plan), details


def method_label(config) -> str:
    cut = config.cut
    if cut.kind == "none":
        return "dense"
    if cut.kind == "depth":
        return f"depth -{cut.blocks} ({cut.criterion})"
    if cut.kind == "fuse":
        return f"fuse {cut.blocks} pairs ({cut.criterion})"
    parts = [f"{name} {cut[field]}" for field, name in
             (("heads_per_group", "heads/group"), ("mlp_channels", "mlp"),
              ("hidden", "hidden")) if cut[field]]
    return f"width {', '.join(parts)} ({cut.criterion})"


def prepare(config, resources: common.Resources) -> None:
    """Checks everything, loads the model and the texts, before any work."""
    check_config(config)
    common.check_zeroshot_data(config.eval.zeroshot)  # before the model loads
    model, _ = resources.model(config)
    check_cut_fits(config.cut, model.config)
    resources.calibration_segments(config)
    resources.evaluation_tokens(config)
    if config.distill.enabled:
        train_job.prepare(common.copy_with(config, rule="dense"), resources)


def workdir_bytes(config, resources: common.Resources) -> int:
    """Free space the structured binary needs: distillation checkpoints and the float32
    export, both bounded by the uncut model's size."""
    export = 4 * resources.model(config)[0].config.num_params() if config.save_hf else 0
    checkpoints = train_job.checkpoint_bytes(config, resources) if config.distill.enabled else 0
    return checkpoints + export


def run_point(config, resources: common.Resources, *, workdir: str = "") -> dict:
    """Cuts, evaluates, distils (``config.distill.enabled``: ``config.train.steps`` steps of
    logit distillation from the uncut model) and evaluates again.

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
    student, details = cut_model(config, teacher, segments, cache=resources.cached)
    cut_seconds = time.perf_counter() - start
    # The distilled point of a sweep follows its cut-only twin: the cut model's evaluation
    # is the same computation, so it is kept rather than repeated.
    before = resources.cached(("cut-eval", _fields_key(config, _CUT_FIELDS + ("eval",))),
                              lambda: common.evaluate(student, eval_tokens, config.eval,
                                                      tokenizer))
    zeroshot_before = resources.cached(
        ("cut-zeroshot", _fields_key(config, _CUT_FIELDS + ("eval",))),
        lambda: common.zeroshot_metrics(student, tokenizer, config.eval.zeroshot, " before"))
    metrics = {
        "method": method_label(config),
        "setting": "distilled" if config.distill.enabled else "cut only",
        "params": student.config.num_params(),
        "params_non_embedding": student.config.num_params(include_embeddings=False),
        "perplexity_before": before.perplexity,
        "tokens_per_second": before.tokens_per_second,
        **zeroshot_before,
    }
    timings = {"cut_seconds": cut_seconds}
    curve, after = [], before
    if config.distill.enabled:
        train_config = common.copy_with(config, rule="dense")
        trainer = train_job.make_trainer(train_config, resources, model=student, teacher=teacher,
                                         temperature=config.distill.temperature)
        distill_start = time.perf_counter()
        curve = train_job.run_with_checkpoints(trainer, workdir)
        timings["distill_seconds"] = time.perf_counter() - distill_start
        student = trainer.model()
        metrics["distill_tokens"] = (config.train.steps * config.train.batch_size
                                     * config.train.seq_len)
        after = common.evaluate(student, eval_tokens, config.eval, tokenizer)
        metrics.update(common.zeroshot_metrics(student, tokenizer, config.eval.zeroshot))
    metrics["perplexity"] = after.perplexity
    return {"metrics": metrics, "timings": timings, "details": details, "curve": curve,
            "student": student}
