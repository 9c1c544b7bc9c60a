"""The 2:4 + int4 format, its reference product, and the Pallas kernels on it (interpret mode on
CPU, and lowered for CUDA without a GPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import export

from jaxprune import kernels, oneshot, quant
from jaxprune.kernels import lowering
from jaxprune.patterns import parse_pattern


def random_codes(rng, n, k, group):
    """2:4 int4 codes [N, K] (some groups with fewer than two non-zeros) and scales [N, K/G]."""
    codes = rng.integers(-8, 8, (n, k // 4, 4))
    keep = np.zeros(codes.shape, bool)
    np.put_along_axis(keep, np.argsort(rng.random(codes.shape), axis=-1)[..., :2], True, -1)
    codes = (codes * keep).reshape(n, k)
    scales = rng.uniform(0.01, 0.1, (n, k // group)).astype(np.float32)
    return codes, scales


def numpy_decode(sparse) -> np.ndarray:
    """The format read entry by entry, independently of jaxprune.kernels."""
    codes, meta = np.asarray(sparse.codes, np.int64), np.asarray(sparse.meta, np.int64)
    scales = np.asarray(sparse.scales, np.float64)
    n, k = codes.shape[0], codes.shape[1] * 4
    group = k // scales.shape[1]
    dense = np.zeros((n, k))
    for row in range(n):
        for g in range(k // 4):
            position = (meta[row, g // 4] >> (4 * (g % 4))) & 15
            for nibble, where in ((codes[row, g] & 15, position & 3),
                                  (codes[row, g] >> 4, position >> 2)):
                column = 4 * g + where
                dense[row, column] += (nibble - 8) * scales[row, column // group]
    return dense


# Each new shape compiles the jitted compression: few examples, small shapes.
@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 3), words=st.integers(1, 3), seed=st.integers(0, 2**16),
       group=st.sampled_from([4, 16]))
def test_round_trip_is_exact_and_matches_the_format(rows, words, seed, group):
    codes, scales = random_codes(np.random.default_rng(seed), rows, 16 * words, group)
    sparse = kernels.compress_int4(codes, jnp.asarray(scales))
    assert sparse.codes.dtype == jnp.uint8 and sparse.codes.shape == (rows, 4 * words)
    want = codes * np.repeat(scales, group, axis=1)
    np.testing.assert_allclose(np.asarray(kernels.decompress_int4(sparse)), want, rtol=1e-6)
    np.testing.assert_allclose(numpy_decode(sparse), want, rtol=1e-6)


def test_a_gptq_quantized_2_of_4_layer_compresses_to_its_own_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 128)).astype(np.float32)
    kernel = jnp.asarray(rng.standard_normal((128, 48)), jnp.float32)
    gram = jnp.asarray(x.T @ x)
    result = oneshot.sparsegpt_sweep(kernel, gram, pattern=parse_pattern("2:4"),
                                     quant=quant.QuantSpec(4, 64, True), blocksize=64)
    q = result.quantized
    sparse = kernels.compress_int4(np.asarray(q.qvalue.astype(jnp.int32)).T, q.scale.T)
    np.testing.assert_array_equal(np.asarray(kernels.decompress_int4(sparse)),
                                  np.asarray(result.kernel).T)
    # 2 bits of codes, 1 of positions and 16/64 of bfloat16 scales per weight: 20% of bf16.
    small = sparse._replace(scales=sparse.scales.astype(jnp.bfloat16))
    stored = small.codes.nbytes + small.meta.nbytes + small.scales.nbytes
    assert stored / (128 * 48 * 2) == pytest.approx((2 + 1 + 16 / 64) / 16)
    assert stored / (128 * 48 * 2) < 0.30


def test_model_sizes_count_2_of_4_kernels_at_their_compressed_formats_bytes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 128)).astype(np.float32)
    dense = jnp.asarray(rng.standard_normal((128, 48)), jnp.float32)
    pruned = oneshot.sparsegpt_sweep(dense, jnp.asarray(x.T @ x), pattern=parse_pattern("2:4"),
                                     quant=quant.QuantSpec(4, 64, True), blocksize=64)
    q = pruned.quantized
    as_int4 = kernels.compress_int4(np.asarray(q.qvalue.astype(jnp.int32)).T,
                                    q.scale.T.astype(jnp.float16))
    as_float = kernels.compress(jnp.asarray(pruned.kernel, jnp.float16).T)
    state = {"a": {"kernel": pruned.kernel}, "b": {"kernel": pruned.kernel},
             "c": {"kernel": dense}, "norm": jnp.ones(48)}
    size = quant.model_storage_bytes(state, {"b/kernel": q})
    assert size == (as_float.values.nbytes + as_float.meta.nbytes
                    + as_int4.codes.nbytes + as_int4.meta.nbytes + as_int4.scales.nbytes
                    + 2 * dense.size + 2 * 48)
    # One group of 4 inputs with a third non-zero: stored whole.
    third = pruned.kernel.at[0:4, 5].set(1.0)
    assert quant.is_2_of_4(pruned.kernel) and not quant.is_2_of_4(third)
    assert quant.model_storage_bytes({"k": third}, {}) == 2 * third.size


@pytest.mark.parametrize("m", [1, 20, 64])
@pytest.mark.parametrize("n, k", [(37, 128), (51, 320)])
def test_kernels_equal_the_reference_in_interpret_mode(m, n, k):
    rng = np.random.default_rng(m + n + k)
    codes, scales = random_codes(rng, n, k, 32)
    sparse = kernels.compress_int4(codes, jnp.asarray(scales, jnp.bfloat16))
    x = jnp.asarray(rng.standard_normal((m, k)), jnp.bfloat16)
    reference = np.asarray(kernels.sparse24_matmul(x, sparse, method="reference"), np.float32)
    exact = np.asarray(x, np.float64) @ numpy_decode(sparse).T
    for method in ["tiled"] + (["decode", "splitk"] if m <= 32 else []):
        out = np.asarray(kernels.sparse24_matmul(x, sparse, method=method, interpret=True),
                         np.float32)
        assert out.shape == (m, n)
        np.testing.assert_allclose(out, reference, rtol=2**-7, atol=1e-2)
        np.testing.assert_allclose(out, exact, rtol=2**-6, atol=2e-2)


def test_jit_and_eager_agree_for_the_decode_kernel():
    rng = np.random.default_rng(5)
    codes, scales = random_codes(rng, 32, 64, 16)
    sparse = kernels.compress_int4(codes, jnp.asarray(scales))
    x = jnp.asarray(rng.standard_normal((2, 64)), jnp.float32)
    run = jax.jit(lambda a, s: kernels.sparse24_matmul(a, s, method="decode", interpret=True))
    with jax.disable_jit():
        eager = kernels.sparse24_matmul(x, sparse, method="decode", interpret=True)
    np.testing.assert_allclose(np.asarray(run(x, sparse)), np.asarray(eager), rtol=1e-5)


@pytest.mark.parametrize("method, m", [("decode", 1), ("tiled", 128)])
def test_the_int4_kernels_lower_for_cuda(method, m):
    n, k, group = 4096, 4096, 128
    sparse = kernels.Sparse24Int4(jax.ShapeDtypeStruct((n, k // 4), jnp.uint8),
                                  jax.ShapeDtypeStruct((n, k // 16), jnp.uint16),
                                  jax.ShapeDtypeStruct((n, k // group), jnp.bfloat16))
    x = jax.ShapeDtypeStruct((m, k), jnp.bfloat16)
    product = jax.jit(lambda a, s: kernels.sparse24_matmul(a, s, method=method))
    module = export.export(product, platforms=["cuda"], disabled_checks=[
        export.DisabledSafetyCheck.custom_call(lowering.TRITON_CALL)])(x, sparse).mlir_module()
    assert module.count(lowering.TRITON_CALL) == 1


@pytest.mark.parametrize("make, message", [
    (lambda: kernels.compress_int4(np.ones((2, 16), np.int32), jnp.ones((2, 1))),
     "not 2:4 sparse along K"),
    (lambda: kernels.compress_int4(np.eye(2, 16, dtype=np.int32) * 9, jnp.ones((2, 1))),
     r"int4 codes must lie in -8..7, got \[0, 9\]"),
    (lambda: kernels.compress_int4(np.eye(2, 16, dtype=np.int32), jnp.ones((2, 3))),
     "scales must be"),
    (lambda: kernels.sparse24_matmul_decode(
        jnp.ones((1, 64)), kernels.compress_int4(np.eye(2, 64, dtype=np.int32),
                                                 jnp.ones((2, 1))), block_k=32,
        interpret=True), "block_k=32 must be a multiple of the int4 weight's scale group"),
    (lambda: kernels.sparse24_matmul(
        jnp.ones((1, 16), jnp.bfloat16), kernels.compress_int4(np.eye(2, 16, dtype=np.int32),
                                                               jnp.ones((2, 1)))),
     "the weight's scales are float32"),
])
def test_bad_input_is_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
