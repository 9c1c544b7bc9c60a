"""The jit-against-eager check of the tests: one call compiled, the same call run op by op."""

import jax
import numpy as np


def assert_jit_matches_eager(fn, *args, rtol: float = 1e-5, atol: float = 1e-6, **kwargs):
    """Calls ``fn`` (a jitted function) as compiled and with ``jax.disable_jit()``, and checks
    every leaf of the two results agree; returns the compiled result."""
    jitted = fn(*args, **kwargs)
    with jax.disable_jit():
        eager = fn(*args, **kwargs)
    jitted_leaves, eager_leaves = jax.tree.leaves(jitted), jax.tree.leaves(eager)
    assert len(jitted_leaves) == len(eager_leaves)
    for a, b in zip(jitted_leaves, eager_leaves, strict=True):
        if np.asarray(a).dtype == bool or np.issubdtype(np.asarray(a).dtype, np.integer):
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    return jitted
