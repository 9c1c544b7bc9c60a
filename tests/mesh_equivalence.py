"""Run by tests/test_mesh.py in a fresh process with JAX_NUM_CPU_DEVICES=8 (the device count is
fixed when JAX starts). Prints one line per case and exits non-zero on any difference."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune import models, oneshot


def main() -> int:
    assert jax.device_count() == 8, jax.device_count()
    config = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                                num_kv_heads=2, intermediate_size=48, head_dim=8)
    llama = models.Llama(config, rngs=nnx.Rngs(0))
    # Gemma 3's layout: four norms per block, GeGLU, a windowed block with its own RoPE base.
    gemma = models.Llama(config.replace(
        qk_norm=True, hidden_act="gelu_tanh", norm_plus_one=True, sandwich_norms=True,
        scale_embeddings=True, query_pre_attn_scalar=24.0, rope_local_theta=300.0,
        attention_windows=(5, None), tie_word_embeddings=True), rngs=nnx.Rngs(0))
    segments = np.random.default_rng(0).integers(0, 64, (8, 16))
    failures = 0
    sparsegpt = oneshot.SparseGPT(blocksize=16)
    # Both axes at once and the model axis alone, each method once: the data axis splits
    # batches (statistics summed across devices), the model axis splits kernels by output.
    cases = [(llama, oneshot.WANDA, "per_output", [(2, 4)]),
             (gemma, sparsegpt, "2:4", [(1, 8)])]
    for model, method, pattern, meshes in cases:
        settings = dict(method=method, pattern=pattern, batch_size=8,
                        sparsity=None if ":" in pattern else 0.5)
        one = oneshot.prune_oneshot(model, segments, oneshot.OneShotConfig(**settings),
                                    progress=False)
        for data, split in meshes:
            mesh = oneshot.prune_oneshot(model, segments, oneshot.OneShotConfig(
                **settings, mesh_data=data, mesh_model=split), progress=False)
            same_masks = all(bool(jnp.array_equal(a, b)) for a, b in zip(
                jax.tree.leaves(one.masks), jax.tree.leaves(mesh.masks), strict=True))
            weight_gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
                jax.tree.leaves(nnx.state(one.model)), jax.tree.leaves(nnx.state(mesh.model)),
                strict=True))
            ok = same_masks and weight_gap <= 1e-5
            failures += not ok
            family = "gemma3" if model.config.sandwich_norms else "llama"
            print(f"{family} {method.name} {pattern} mesh {data}x{split}: masks equal "
                  f"{same_masks}, max weight difference {weight_gap:.2e} "
                  f"{'ok' if ok else 'FAIL'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
