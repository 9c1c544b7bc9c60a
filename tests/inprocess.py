"""Runs an absl binary's ``main`` in this process, as ``python -m MODULE ARGS`` would.

A new process pays Python's and JAX's imports and builds its models again (about 3 s of a 6 s
smoke run); in this process the imports are done and XLA's compiled programs are reused. The
binary's flags are process-global, so each call deletes the flags the module defined, reloads
it (defining them again) and parses the new command line. What the binary prints, and what it
logs through absl, is captured; a usage error gives a non-zero status as ``absl.app`` does.

Use a subprocess where a test needs a real process (a kill, fake devices, environment), or
``run_optimized`` for a binary that spends more time running the real model than compiling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import subprocess
import sys
import traceback

from absl import app, flags
from absl import logging as absl_logging

from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Completed:
    """What ``subprocess.run`` would have returned."""

    returncode: int
    stdout: str
    stderr: str


def _fresh_module(name: str):
    """The binary's module, reloaded with its flags defined anew."""
    registered = flags.FLAGS.flags_by_module_dict()
    for flag in list(registered.get(name, [])):
        if flag.name in flags.FLAGS:
            delattr(flags.FLAGS, flag.name)
    # Each binary defines its own --config; ml_collections adds a flag per overridden field.
    for flag_name in [n for n in flags.FLAGS if n == "config" or n.startswith("config.")]:
        delattr(flags.FLAGS, flag_name)
    module = sys.modules.get(name)
    return importlib.reload(module) if module is not None else importlib.import_module(name)


@contextlib.contextmanager
def _captured(stdout: io.StringIO, stderr: io.StringIO, argv: list[str]):
    absl_logging.use_absl_handler()  # as absl.app.run does
    handler = absl_logging.get_absl_handler().python_handler
    saved = sys.argv, handler.stream, absl_logging.get_verbosity(), os.getcwd()
    sys.argv, handler.stream = argv, stderr
    absl_logging.set_verbosity(absl_logging.INFO)
    os.chdir(REPO)  # config paths are relative to the repository, as for `python -m`
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            yield
    finally:
        sys.argv, handler.stream = saved[0], saved[1]
        absl_logging.set_verbosity(saved[2])
        os.chdir(saved[3])


def load(module_name: str):
    """A binary's module, for calling its helpers: imported (or reloaded) with its flags
    defined in place of any other binary's ``--config``. Import binaries this way inside a test,
    not at a test module's top, where two binaries would define ``--config`` twice."""
    return _fresh_module(module_name)


def run(module_name: str, *args: str) -> Completed:
    """Runs ``module_name``'s ``main`` with ``args``; returns status, stdout and stderr."""
    from experiments import common

    argv = [module_name, *args]
    module = _fresh_module(module_name)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with _captured(stdout, stderr, argv):
        try:
            flags.FLAGS.unparse_flags()
            remaining = common.parse_flags(argv)
            absl_logging.set_verbosity(absl_logging.INFO)  # parsing reset it
            module.main(remaining)
        except app.UsageError as err:
            stderr.write(f"FATAL Flags parsing error: {err}\n")
            code = err.exitcode
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
        except Exception:  # noqa: BLE001 - reported as the process would
            stderr.write(traceback.format_exc())
            code = 1
    return Completed(code, stdout.getvalue(), stderr.getvalue())


def run_optimized(module_name: str, *args: str) -> subprocess.CompletedProcess:
    """Runs the binary as ``python -m`` in a new process, at XLA's default optimization level
    and fusion emitters.

    The suite's compile settings suit its thousands of tiny programs; SmolLM2's binaries
    instead run long vectorizable loops (Wanda's selection over 210 kernels) that those settings
    slow more than a new process costs: the demo's smoke run 38 CPU-seconds in this process at
    -O0, 23 in a new one at the default level (27 s with the legacy fusion emitter).
    """
    flags = xla_flags.without_tiny_program_flags(os.environ.get("XLA_FLAGS", ""))
    return subprocess.run(
        [sys.executable, "-m", module_name, *args], cwd=REPO, capture_output=True, text=True,
        timeout=900, check=False, env=dict(os.environ, XLA_FLAGS=flags))
