"""Safe to re-run, resume and share: one test (at least) per finding of the issue.

1. another config's checkpoints reused  -> fingerprint in run.json, refusal naming fields
2. curve lost on resume                 -> tests/test_train.py, tests/test_structured.py
3. concurrent sweeps and appends        -> workdir lock, locked appends
4. bad workdir found only when writing  -> checked before the model loads
5. traced sparsity, non-2:4 compress    -> checks when the compiled program runs
6. corrupt tensors load silently        -> finiteness check naming the tensor
7. misfitting N:M, ignored base overrides -> checked when the job is prepared
8. messages                             -> config-file argument, results.jsonl, 2:3, ranks, stats
9. private result files                 -> the umask decides
"""

import json
import multiprocessing
import os
import shutil
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import app

import jaxprune as jp
from configs import gradual, wanda
from configs.sweeps import oneshot_table
from experiments import common, oneshot_job, train_job
from experiments import sweep_runner as sweep
from jaxprune import kernels, models, workdir
from jaxprune.criteria import obd_score, wanda_score
from jaxprune.models.gguf_file import read_gguf_file
from jaxprune.oneshot import sparsegpt_prune_layer
from tests import inprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def run_binary(*args):
    """The binary in this process (tests/inprocess.py)."""
    return inprocess.run(*args)


def claim(path, config, overwrite=False):
    with workdir.locked(str(path)):
        return workdir.claim(str(path), config=config, fingerprint=json.dumps(config),
                             code_version="v1", overwrite=overwrite)


# 1. Another config in the same workdir.


def test_claim_resumes_the_same_config_and_refuses_another_naming_the_fields(tmp_path):
    config = {"rule": "rigl", "train": {"learning_rate": 0.003, "steps": 60}}
    assert claim(tmp_path, config) == "new"
    (tmp_path / "checkpoints").mkdir()
    assert claim(tmp_path, config) == "resume"
    other = {"rule": "rigl", "train": {"learning_rate": 0.001, "steps": 60}}
    with pytest.raises(workdir.ConfigMismatchError) as error:
        claim(tmp_path, other)
    assert "train.learning_rate: 0.003 -> 0.001" in str(error.value)
    assert "--config.overwrite=True" in str(error.value) and "steps" not in str(error.value)
    assert (tmp_path / "checkpoints").is_dir()  # refused: nothing touched


def test_overwrite_moves_the_old_run_aside_without_deleting_it(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    claim(path, {"a": 1})
    (path / "results.json").write_text("old")
    assert claim(path, {"a": 2}, overwrite=True) == "new"
    assert sorted(os.listdir(path)) == [".lock", "run.json"]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and (aside[0] / "results.json").read_text() == "old"
    assert json.loads((aside[0] / "run.json").read_text())["config"] == {"a": 1}
    assert json.loads((path / "run.json").read_text())["config"] == {"a": 2}


def test_files_without_a_run_record_are_not_taken_for_this_run(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(workdir.ConfigMismatchError, match=r"holds files \(checkpoints\) but no "
                                                          r"run.json"):
        claim(tmp_path, {"a": 1})


def test_prune_reruns_reuse_a_finished_run_and_refuse_another_config(tmp_path):
    base = ["experiments.prune", "--config=configs/wanda.py:runlocal",
            "--config.model=tiny-llama", f"--config.workdir={tmp_path}"]
    first = run_binary(*base)
    assert first.returncode == 0, first.stderr[-3000:]
    results = (tmp_path / "results.json").read_bytes()
    again = run_binary(*base)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "holds the finished run of this config" in again.stdout
    assert (tmp_path / "results.json").read_bytes() == results
    other = run_binary(*base, "--config.method=magnitude")
    assert other.returncode != 0 and "method: 'wanda' -> 'magnitude'" in other.stderr
    assert (tmp_path / "results.json").read_bytes() == results


# 3. Concurrent writers.


def _append_rows(path, writer, count):
    for i in range(count):
        sweep.append_row(path, {"writer": writer, "i": i, "fingerprint": f"{writer}-{i}",
                                "padding": "x" * 2000})


def test_concurrent_appends_keep_every_row(tmp_path):
    path = str(tmp_path / "results.jsonl")
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_rows, args=(path, w, 200)) for w in range(2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    rows = sweep.read_rows(path)
    assert len(rows) == 400
    assert {(r["writer"], r["i"]) for r in rows} == {(w, i) for w in range(2) for i in range(200)}


def test_an_interrupted_append_is_skipped_then_cut(tmp_path):
    path = tmp_path / "results.jsonl"
    sweep.append_row(str(path), {"fingerprint": "a"})
    with open(path, "a") as f:
        f.write('{"fingerprint": "b", "metr')  # a writer killed mid-line
    assert [r["fingerprint"] for r in sweep.read_rows(str(path))] == ["a"]
    sweep.append_row(str(path), {"fingerprint": "c"})
    assert [r["fingerprint"] for r in sweep.read_rows(str(path))] == ["a", "c"]


def test_a_second_sweep_on_a_locked_workdir_stops_at_once_naming_the_holder(tmp_path):
    path = tmp_path / "sweep"
    path.mkdir()
    with workdir.locked(str(path)):
        result = run_binary("experiments.sweep", "--config=configs/sweeps/oneshot_table.py:"
                            "runlocal", f"--config.workdir={path}")
    assert result.returncode != 0
    assert f"is in use by PID {os.getpid()} on host" in result.stderr
    assert not (path / sweep.RESULTS).exists() and "points," not in result.stderr


def test_the_lock_is_exclusive_and_released(tmp_path):
    busy = pytest.raises(workdir.WorkdirBusyError, match=f"PID {os.getpid()}")
    with workdir.locked(str(tmp_path)), busy, workdir.locked(str(tmp_path)):
        pass
    with workdir.locked(str(tmp_path)):  # free again
        pass


def test_a_sweep_workdir_accepts_new_points_but_not_another_base(tmp_path):
    config = common.apply_runlocal(oneshot_table.get_config("runlocal"))
    config.workdir = str(tmp_path)
    config.points = [{"method": "dense"}]
    with common.claimed_workdir(config, ignore=sweep.FREE_FIELDS) as commit:
        assert commit() == "new"
    config.points = [{"method": "dense"}, {"method": "magnitude"}]
    with common.claimed_workdir(config, ignore=sweep.FREE_FIELDS) as commit:
        assert commit() == "resume"
    config.base.eval.window = 64
    refused = pytest.raises(app.UsageError, match=r"base.eval.window: \d+ -> 64")
    with refused, common.claimed_workdir(config, ignore=sweep.FREE_FIELDS):
        pass


# 4. A bad workdir is found before the model loads.


@pytest.mark.parametrize("kind", ["file", "under_a_file"])
def test_prune_refuses_a_bad_workdir_before_loading_the_model(tmp_path, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    path = blocker if kind == "file" else blocker / "run"
    result = run_binary("experiments.prune", "--config=configs/wanda.py:runlocal",
                        f"--config.workdir={path}")
    assert result.returncode != 0
    expected = "exists and is not a directory" if kind == "file" else "is not a writable"
    assert f"config.workdir='{path}' {expected}" in result.stderr, result.stderr[-2000:]
    assert "wanda blocks" not in result.stderr and "Traceback" not in result.stderr


def test_free_space_is_checked_against_what_the_job_writes(tmp_path):
    with pytest.raises(workdir.WorkdirError, match="MB free; this job writes about"):
        workdir.check_workdir(str(tmp_path), need_bytes=2**62)
    config = common.apply_runlocal(wanda.get_config("runlocal"))
    config.model, config.save_checkpoint, config.save_hf = "tiny-llama", True, True
    params = models.RANDOM_MODELS["tiny-llama"].num_params()
    resources = common.Resources()
    assert oneshot_job.workdir_bytes(config, resources) == 12 * params


def test_refused_input_leaves_no_workdir_behind(tmp_path):
    result = run_binary("experiments.structured", "--config=configs/structured.py:heads6,"
                        "runlocal", "--config.cut.heads_per_group=3",
                        f"--config.workdir={tmp_path / 'new'}")
    assert result.returncode != 0 and "more than the model's 2" in result.stderr
    assert not (tmp_path / "new").exists()


# 5. Traced values out of range fail loudly.


def test_a_traced_sparsity_out_of_range_fails_when_the_program_runs():
    scores = {"a": jax.random.normal(jax.random.PRNGKey(0), (16, 8))}
    select = jax.jit(lambda s, sparsity: jp.select_masks(s, sparsity, "per_output"))
    eager = jp.select_masks(scores, 0.25, "per_output")
    assert np.array_equal(select(scores, 0.25)["a"], eager["a"])  # jit and eager agree
    for bad in (1.0, -0.5, float("nan")):
        with pytest.raises(Exception, match=r"sparsity at 'a' must be in \[0, 1\)"):
            jax.block_until_ready(select(scores, bad))


def test_compress_refuses_a_weight_that_is_not_2_4_eagerly_and_under_jit():
    weight = jax.random.normal(jax.random.PRNGKey(1), (8, 32))
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        kernels.compress(weight)
    with pytest.raises(TypeError):
        kernels.compress(weight, validate=False)  # the silent opt-out is gone
    with pytest.raises(Exception, match="groups of 4 inputs have more than 2 non-zeros"):
        jax.block_until_ready(jax.jit(kernels.compress)(weight))
    mask = jp.select_masks({"w": jnp.abs(weight.T)}, 0.5, "2:4")["w"].T
    sparse = weight * mask
    assert np.array_equal(kernels.decompress(jax.jit(kernels.compress)(sparse)), sparse)


# 6. Corrupt tensors.


def test_a_nan_in_a_safetensors_checkpoint_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    model, tokenizer = models.load("tiny-llama")
    models.save_hf_dir(model, str(tmp_path / "hf"), tokenizer=tokenizer)
    weights = tmp_path / "hf" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["model.layers.1.mlp.up_proj.weight"][3, 5] = np.inf
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"'model.layers.1.mlp.up_proj.weight' has 1 non-finite "
                                         r"values \(NaN or inf\) after loading, the first at "
                                         r"index \(5, 3\)"):
        models.load(str(tmp_path / "hf"))


@pytest.mark.real_model
def test_a_gguf_with_corrupt_bytes_is_named(tmp_path):
    source = models.packaged_model_path("smollm2-135m")
    tensor = next(t for t in read_gguf_file(source).tensors
                  if t.name == "blk.0.attn_norm.weight")
    corrupt = tmp_path / "corrupt.gguf"
    shutil.copyfile(source, corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(tensor.offset + 4 * 7)
        f.write(np.array([np.nan], np.float32).tobytes())
    with pytest.raises(ValueError, match=r"tensor 'blk.0.attn_norm.weight \(model.layers.0."
                                         r"input_layernorm.weight\) in .*corrupt.gguf' has 1 "
                                         r"non-finite values"):
        models.load_gguf(str(corrupt))


# 7. Checked when the job is prepared.


def test_an_n_of_m_training_pattern_that_does_not_fit_the_model_is_refused_at_prepare():
    config = common.apply_runlocal(gradual.get_config("snip,runlocal"))
    config.sparsity.pattern, config.sparsity.final = "3:7", 1 - 3 / 7
    with pytest.raises(ValueError, match=r"config.sparsity.pattern='3:7' \(rule 'snip'\) does "
                                         r"not fit config.model='tiny-llama': pattern 3:7 needs "
                                         r"axis 0 .* divisible by M=7"):
        train_job.prepare(config, common.Resources())


def test_a_base_override_that_every_point_replaces_is_refused():
    config = oneshot_table.get_config("runlocal")
    with pytest.raises(ValueError, match=r"--config.base.method has no effect: every point"):
        sweep.resolve_points(config, {"base.method"})
    sweep.resolve_points(config, {"base.sparsity"})  # not set by any point: fine


# 8. Messages.


def test_a_bad_config_file_argument_is_one_line_without_a_traceback():
    result = run_binary("experiments.structured", "--config=configs/structured.py:heads7")
    assert result.returncode == 2
    assert ("the config file refused its argument: configs/structured.py takes one cut of "
            in result.stderr)
    assert "Traceback" not in result.stderr and "File " not in result.stderr


def test_a_corrupt_results_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"fingerprint": "a"}\n\n{"fingerprint": "b"}\n{"fingerprint": oops}\n')
    with pytest.raises(ValueError, match=rf"{path}, line 4: not a JSON row"):
        sweep.read_rows(str(path))


def test_a_pattern_and_sparsity_that_disagree_say_what_to_type():
    config = common.apply_runlocal(wanda.get_config("runlocal"))
    config.pattern = "2:3"
    with pytest.raises(ValueError, match=r"config.sparsity must be 1 - N/M = 0.33333333333333337,"
                                         r" got 0.5; add --config.sparsity=0.33333333333333337"):
        oneshot_job.check_config(config)
    with pytest.raises(ValueError, match=r"pass sparsity=0.33333333333333337, or None"):
        jp.select_masks({"w": jnp.ones((6, 2))}, 0.5, "2:3")


@pytest.mark.parametrize("shape", [(8,), (8, 4, 2)])
def test_n_of_m_needs_a_2d_leaf(shape):
    scores = {"w": jax.random.uniform(jax.random.PRNGKey(2), shape)}
    with pytest.raises(ValueError, match=r"pattern 2:4 needs a 2-D kernel \[in, out\]"):
        jp.select_masks(scores, 0.5, "2:4")


def test_statistics_of_the_wrong_shape_are_refused_by_name():
    kernel = jax.random.normal(jax.random.PRNGKey(3), (8, 4))
    with pytest.raises(ValueError, match=r"sq_norms has shape \(1,\), but the kernel \(8, 4\) "
                                         r"needs \(8,\)"):
        wanda_score(kernel, jnp.ones(1))  # would broadcast silently
    with pytest.raises(ValueError, match=r"hessian_diag has shape \(4,\)"):
        obd_score(kernel, jnp.ones(4))
    with pytest.raises(ValueError, match=r"gram has shape \(4, 4\)"):
        sparsegpt_prune_layer(kernel, jnp.eye(4), sparsity=0.5)


# 9. Modes follow the umask.


def test_results_and_exports_are_readable_as_the_umask_allows(tmp_path):
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    previous = os.umask(0o022)
    try:
        common.write_json_atomic(str(tmp_path / "results.json"), {"a": 1})
        sweep.append_row(str(tmp_path / "results.jsonl"), {"fingerprint": "a"})
        model, tokenizer = models.load("tiny-llama")
        models.save_hf_dir(model, str(tmp_path / "hf"), tokenizer=tokenizer)
        (tmp_path / "run").mkdir()
        claim(tmp_path / "run", {"a": 1})
    finally:
        os.umask(previous)
    assert mode(tmp_path / "results.json") == 0o644
    assert mode(tmp_path / "results.jsonl") == 0o644
    assert mode(tmp_path / "hf") == 0o755
    assert mode(tmp_path / "run" / "run.json") == 0o644
