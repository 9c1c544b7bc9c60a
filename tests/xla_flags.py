"""The XLA settings the suite compiles with (imported by conftest.py before JAX starts).

Tests compile thousands of tiny programs and run each a few times, so XLA's compile time was
most of the suite's CPU time. Three settings trade run time for compile time, and one keeps
the two test workers from fighting over the cores:
- LLVM's expensive passes off, everywhere;
- one thread per matrix product (Eigen's), everywhere: pytest-xdist runs a worker per core
  and the binaries some tests start add processes, each of which had its own thread pool
  over both cores (the whole suite on the 2-core machine, 2026-12-02: 426 s with the pools,
  342 s without; the demo binary's smoke run in that suite 26.3 s -> 23.7 s);
- ``TINY_PROGRAM_FLAGS``, for the tests' own process: -O0, and XLA's legacy IR emitter for
  CPU fusions in place of the newer MLIR fusion emitters, whose pipeline costs far more per
  program (tests/mesh_equivalence.py on the 2-core machine: 31.5 s at XLA's defaults, 18.0 s
  at -O0, 10.2 s at -O0 with the legacy emitter).
The loops XLA emits follow IEEE semantics under every setting (no fast-math), but fused
multiply-adds, loop shapes and reduction orders may round differently in the last bit, so every
comparison in the suite is between runs made under the same setting or against a tolerance,
never against a figure from a run at XLA's defaults.
"""

ALWAYS = ("--xla_llvm_disable_expensive_passes=true", "--xla_cpu_multi_thread_eigen=false")
TINY_PROGRAM_FLAGS = ("--xla_backend_optimization_level=0",
                      "--xla_cpu_use_fusion_emitters=false")
SUITE = " ".join(ALWAYS + TINY_PROGRAM_FLAGS)


def without_tiny_program_flags(flags: str) -> str:
    """``flags`` less the settings that suit only tiny programs."""
    tiny = {flag.split("=")[0] for flag in TINY_PROGRAM_FLAGS}
    return " ".join(flag for flag in flags.split() if flag.split("=")[0] not in tiny)
