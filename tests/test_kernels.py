"""2:4 format, reference matmul and the Pallas kernels (interpret mode on CPU)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune import kernels, models
from jaxprune.eval import greedy_generate


def random_2_4(rng, n, k, dtype=jnp.bfloat16, *, sparser=False):
    """A random [N, K] weight with at most 2 non-zeros per group of 4 inputs (NumPy only)."""
    w = rng.standard_normal((n, k // 4, 4)).astype(np.float32)
    keep = np.zeros_like(w, bool)
    chosen = np.argsort(rng.random((n, k // 4, 4)), axis=-1)[..., :2]
    np.put_along_axis(keep, chosen, True, axis=-1)
    if sparser:  # some groups with one or no non-zero
        keep &= rng.random(keep.shape) < 0.6
    return jnp.asarray((w * keep).reshape(n, k), dtype)


def numpy_decode(values, meta):
    """The format written out entry by entry, independently of jaxprune.kernels."""
    values, meta = np.asarray(values, np.float64), np.asarray(meta).astype(np.int64)
    n, half = values.shape
    dense = np.zeros((n, half * 2))
    for row in range(n):
        for group in range(half // 2):
            code = (meta[row, group // 4] >> (4 * (group % 4))) & 15
            first, second = code & 3, code >> 2
            assert first < second
            dense[row, 4 * group + first] += values[row, 2 * group]
            dense[row, 4 * group + second] += values[row, 2 * group + 1]
    return dense


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_compress_round_trip_is_exact_and_matches_the_format(dtype):
    rng = np.random.default_rng(0)
    weight = random_2_4(rng, 24, 64, dtype, sparser=True)
    sparse = kernels.compress(weight)
    assert sparse.values.shape == (24, 32) and sparse.meta.shape == (24, 4)
    assert sparse.meta.dtype == jnp.uint16 and sparse.values.dtype == dtype
    np.testing.assert_array_equal(np.asarray(kernels.decompress(sparse)), np.asarray(weight))
    np.testing.assert_array_equal(numpy_decode(sparse.values, sparse.meta),
                                  np.asarray(weight, np.float64))
    # bfloat16 values take 9/16 of the dense bytes
    if dtype == jnp.bfloat16:
        compressed = sparse.values.nbytes + sparse.meta.nbytes
        assert compressed * 16 == weight.nbytes * 9


@given(rows=st.integers(1, 6), words=st.integers(1, 3), seed=st.integers(0, 2**16),
       sparser=st.booleans())
def test_round_trip_property(rows, words, seed, sparser):
    weight = random_2_4(np.random.default_rng(seed), rows, 16 * words, jnp.float32,
                        sparser=sparser)
    sparse = kernels.compress(weight)
    np.testing.assert_array_equal(np.asarray(kernels.decompress(sparse)), np.asarray(weight))


def test_reference_matmul_is_exact():
    rng = np.random.default_rng(1)
    weight = random_2_4(rng, 33, 128, jnp.float32)
    x = jnp.asarray(rng.standard_normal((5, 128)), jnp.float32)
    out = kernels.sparse24_matmul_reference(x, kernels.compress(weight))
    expected = jnp.dot(x, weight.T, preferred_element_type=jnp.float32)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


@pytest.mark.parametrize("m", [1, 3, 16, 20, 64, 100])
@pytest.mark.parametrize("n, k", [(37, 64), (51, 320)])
def test_kernels_equal_the_reference_in_interpret_mode(m, n, k):
    rng = np.random.default_rng(m + n + k)
    weight = random_2_4(rng, n, k)
    sparse = kernels.compress(weight)
    x = jnp.asarray(rng.standard_normal((m, k)), jnp.bfloat16)
    reference = np.asarray(kernels.sparse24_matmul_reference(x, sparse), np.float32)
    exact = np.asarray(x, np.float64) @ np.asarray(weight, np.float64).T
    methods = ["tiled"] + (["decode", "splitk"] if m <= 32 else [])
    for method in methods:
        out = np.asarray(kernels.sparse24_matmul(x, sparse, method=method, interpret=True),
                         np.float32)
        assert out.shape == (m, n) and out.dtype == np.float32
        # Both accumulate in float32 and round once to bfloat16 (8 bits of mantissa).
        np.testing.assert_allclose(out, reference, rtol=2**-7, atol=1e-2)
        np.testing.assert_allclose(out, exact, rtol=2**-7, atol=5e-2)
    auto = kernels.sparse24_matmul(x, sparse, interpret=True)
    np.testing.assert_allclose(np.asarray(auto, np.float32), reference, rtol=2**-7, atol=1e-2)
    # Off a GPU and without interpret, "auto" is the reference itself.
    np.testing.assert_array_equal(np.asarray(kernels.sparse24_matmul(x, sparse), np.float32),
                                  reference)


def test_jit_and_eager_agree_for_the_kernel():
    rng = np.random.default_rng(5)
    sparse = kernels.compress(random_2_4(rng, 40, 64, jnp.float32))
    x = jnp.asarray(rng.standard_normal((3, 64)), jnp.float32)
    for method in ("decode", "splitk"):
        eager = kernels.sparse24_matmul(x, sparse, method=method, interpret=True)
        jitted = jax.jit(lambda a, s, m=method: kernels.sparse24_matmul(
            a, s, method=m, interpret=True))(x, sparse)
        np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-6)


def pruned_tiny_llama():
    model, tokenizer = models.load("tiny-llama")
    from flax import nnx

    params = nnx.state(model, nnx.Param)
    masks = jp.prune(params, jp.magnitude, pattern="2:4")
    nnx.update(model, jp.apply_masks(params, masks))
    return model, tokenizer


def test_pruned_model_gives_the_same_logits_through_the_kernels():
    model, tokenizer = pruned_tiny_llama()
    sparse_model = kernels.sparsify_llama(model, interpret=True)
    assert isinstance(sparse_model.layers[0].mlp.down_proj, kernels.SparseLinear)
    assert not isinstance(model.layers[0].mlp.down_proj, kernels.SparseLinear)  # a copy
    tokens = jnp.asarray(tokenizer.encode("The capital of France is Paris."))[None]
    dense_logits = np.asarray(model(tokens))
    sparse_logits = np.asarray(sparse_model(tokens))
    np.testing.assert_allclose(sparse_logits, dense_logits, rtol=1e-5, atol=1e-5)
    prompt = "Sparse kernels"
    assert (greedy_generate(sparse_model, tokenizer, prompt, max_new_tokens=4)
            == greedy_generate(model, tokenizer, prompt, max_new_tokens=4))
    # The dense fallback decompresses once: the original kernels, zeros included, back.
    dense_again = kernels.densify_llama(sparse_model)
    assert not isinstance(dense_again.layers[1].self_attn.q_proj, kernels.SparseLinear)
    for path in ("self_attn/q_proj", "mlp/down_proj"):
        owner, name = path.split("/")
        original = getattr(getattr(model.layers[1], owner), name).kernel[...]
        restored = getattr(getattr(dense_again.layers[1], owner), name).kernel[...]
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(original))
    np.testing.assert_allclose(np.asarray(dense_again(tokens)), dense_logits, rtol=1e-6,
                               atol=1e-6)


def test_sparsify_refuses_a_dense_model_naming_the_layer():
    model, _ = models.load("tiny-llama")
    with pytest.raises(ValueError, match=r"layers/0/self_attn/q_proj: weight is not 2:4"):
        kernels.sparsify_llama(model)


def test_sparsify_converts_only_the_chosen_declared_layers():
    model, _ = pruned_tiny_llama()
    sparse_model = kernels.sparsify_llama(model, layers=("mlp/up_proj",), interpret=True)
    for block in sparse_model.layers:
        assert isinstance(block.mlp.up_proj, kernels.SparseLinear)
        assert not isinstance(block.mlp.down_proj, kernels.SparseLinear)
    with pytest.raises(ValueError, match=r"\['mlp/upproj'\] are not prunable .* allowed: "):
        kernels.sparsify_llama(model, layers=("mlp/upproj",))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: kernels.compress(jnp.ones((4, 16))), "groups of 4 inputs have more than 2"),
        (lambda: kernels.compress(jnp.zeros((4, 24))),
         "must be a multiple of 16 for the 2:4 format, got K=24"),
        (lambda: kernels.compress(jnp.zeros((16,))), "must be 2-D [N, K]"),
        (lambda: kernels.sparse24_matmul(
            jnp.ones((2, 32), jnp.float32),
            kernels.compress(jnp.zeros((8, 32), jnp.bfloat16))),
         "x is float32 but the weight values are bfloat16"),
        (lambda: kernels.sparse24_matmul(
            jnp.ones((2, 48), jnp.bfloat16),
            kernels.compress(jnp.zeros((8, 32), jnp.bfloat16))),
         "x has K=48 inputs but the weight has K=32"),
        (lambda: kernels.sparse24_matmul(
            jnp.ones((2, 32), jnp.bfloat16),
            kernels.compress(jnp.zeros((8, 32), jnp.bfloat16)), method="cusparselt"),
         "method must be one of"),
    ],
)
def test_bad_input_is_refused(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Absent from a GPU image that has only jax, flax (with its own dependencies: optax, and so
# absl) and numpy: the benchmark must not need any of these.
HIDDEN = ("ml_collections", "tqdm", "tokenizers", "gguf", "safetensors", "matplotlib",
          "transformers", "filelock", "experiments.common", "torch")
HIDE_IMPORTS = """
import builtins
hidden = {hidden!r}
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if any(name == h or name.startswith(h + ".") for h in hidden):
        raise ImportError(f"{{name}} is hidden for this test")
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
"""


def test_benchmark_refuses_to_time_without_a_gpu_and_checks_its_flags(tmp_path, capsys):
    """In this process (the smoke test below runs the benchmark with the other modules hidden):
    refusals return or exit with argparse's status 2, naming the problem."""
    from experiments import bench_sparse_matmul as bench

    assert bench.main([f"--out={tmp_path / 'x.json'}"]) == 2
    assert "no GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        bench.main(["--smoke", "--methods=dense,nosuch", f"--out={tmp_path / 'x.json'}"])
    assert exited.value.code == 2 and "unknown: ['nosuch']" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_failed_check_fails_the_row_not_the_run():
    from experiments import bench_sparse_matmul as bench

    ok, error = bench.check_output(jnp.ones((2, 3)), jnp.ones((2, 3)))
    assert ok and error == 0
    ok, error = bench.check_output(jnp.ones((2, 3)) * 1.1, jnp.ones((2, 3)))
    assert not ok and error == pytest.approx(0.1, rel=1e-3)
    assert bench.check_output(jnp.full((2, 3), jnp.nan), jnp.ones((2, 3)))[0] is False
    row = {"N": 8, "K": 64, "M": 1, "method": "decode", "error": "check failed: 0.1 > 0.0156"}
    assert bench.format_row(row) == ("| 8 | 64 | 1 | decode | failed: check failed: 0.1 > "
                                     "0.0156 | | | | |")


def test_gpu_check_script_runs_every_step_in_smoke_mode(tmp_path):
    """The whole GPU script on a tiny ragged shape through the interpreter: lowering, numerics,
    tuning, the benchmark (every method checked then timed) and decoding; every Python it starts
    has the modules a jax/flax/numpy GPU image lacks hidden (``HIDDEN``), so this also shows
    that the script needs nothing else."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_IMPORTS.format(
        hidden=HIDDEN))
    result = subprocess.run(
        ["bash", "experiments/gpu_check.sh"], cwd=REPO, capture_output=True, text=True,
        timeout=600, check=False, env=dict(os.environ, JAX_PLATFORMS="cpu", SMOKE="1", TUNE="1",
                                           OUT=str(tmp_path), PYTHON=sys.executable,
                                           PYTHONPATH=str(site)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lowered and checked 60 kernel variants for CUDA" in result.stdout
    assert "0 kernel rows failed" in result.stdout
    decoded = json.loads((tmp_path / "decode.json").read_text())["rows"]
    assert [r["batch"] for r in decoded] == [3]
    assert all(r["same tokens"] and r["2:4 tokens/s"] > 0 for r in decoded)
    ragged = json.loads((tmp_path / "ragged.json").read_text())["rows"]
    assert {r["method"] for r in ragged if "us" in r} == {"dense", "decode", "splitk", "tiled",
                                                          "auto"}
    payload = json.loads((tmp_path / "bench.json").read_text())
    assert payload["header"]["interpret"] is True and payload["header"]["check"] is True
    timed = {(r["M"], r["method"]) for r in payload["rows"] if "us" in r}
    assert timed == {(m, method) for m in (20,)
                     for method in ("dense", "reference", "decode", "splitk", "tiled", "auto")}
    for row in payload["rows"]:
        if "us" in row:  # checked against the dense product before timing
            assert row["check_error"] <= 2**-6 and row["ratio"] > 0 and row["roofline_pct"] > 0
    # torch has no CUDA device here: its row fails, the run and the table do not.
    torch_rows = [r for r in payload["rows"] if r["method"].startswith("torch")]
    assert torch_rows and all("error" in r for r in torch_rows)
    table = (tmp_path / "bench.md").read_text()
    assert "| 40 | 128 | 20 | decode |" in table and "| torch | failed: " in table
    tuned = json.loads((tmp_path / "tune.tuned.json").read_text())
    assert set(tuned["settings"]) == {f"{m}/40x128/m{b}" for m in ("decode", "splitk", "tiled")
                                      for b in (32,)}  # M=20 only, in smoke mode
