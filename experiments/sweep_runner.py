"""Running a sweep: resolve and check its points, run those without a row, write the reports.

The logic behind ``experiments.sweep`` (the binary only adds flags), importable without
defining any flag. See that module's docstring and docs/experiments.md for what a sweep does.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import os
import platform
import re
import shutil
import time

from absl import logging

from experiments import common, sweep_report
from jaxprune import workdir

# config.experiment -> module providing check_config(config), prepare(config, resources) and
# run_point(config, resources, keep_dir=...) -> {"metrics": dict, "timings": dict, ...}.
EXPERIMENTS = {"prune": "experiments.oneshot_job", "train": "experiments.train_job",
               "structured": "experiments.structured_job"}

RESULTS = "results.jsonl"
PROGRESS = "progress.json"
# WORKDIR/unfinished/<fingerprint>: what a point keeps while it runs (its finished zero-shot
# tasks), so that a killed sweep resumes the point where it stopped; removed with its row.
UNFINISHED = "unfinished"


def _point_field_names(message: str, overrides: dict, index: int) -> str:
    """A job's message with its ``config.FIELD`` names as the sweep's command line spells them:
    ``config.points[3].FIELD`` for a field the point sets, ``config.base.FIELD`` otherwise."""
    def rename(match):
        field = match.group(1)
        where = f"points[{index}]" if field in overrides else "base"
        return f"config.{where}.{field}"

    return re.sub(r"\bconfig\.([A-Za-z_][A-Za-z0-9_.]*[A-Za-z0-9_])", rename, message)


def point_error(index: int, overrides: dict, err: Exception) -> ValueError:
    """The error of sweep point ``index``, naming the point and its fields."""
    return ValueError(f"sweep point {index} ({describe(overrides)}): "
                      f"{_point_field_names(str(err), overrides, index)}")


def check_base_overrides(sweep, base_fields: set[str]) -> None:
    """Refuses ``--config.base.FIELD`` overrides (``base_fields``) that every point replaces
    (they would be silently ignored).

    Raises:
      ValueError: naming the override and the points' field.
    """
    for field in sorted(base_fields):
        if all(field in overrides for overrides in sweep.points):
            raise ValueError(f"--config.base.{field} has no effect: every point of the sweep "
                             f"sets {field!r} itself (config.points); drop the override or "
                             "change the points")


def resolve_points(sweep, command_line: set[str] | frozenset = frozenset()) -> list:
    """The config of every point: the base with the point's overrides, runlocal applied.

    Args:
      sweep: a sweep config (``experiment``, ``base``, ``points``, ``runlocal``).
      command_line: sweep fields set on the command line; those under ``base.`` and the
        point's own overrides win over the base config's runlocal overrides.

    Returns:
      A list of ``(overrides, config, fingerprint)``.

    Raises:
      ValueError: for an unknown experiment, a bad override or value (naming the point and
        the field), a base override that every point replaces, or two points that resolve to
        the same config.
    """
    if sweep.experiment not in EXPERIMENTS:
        raise ValueError(f"config.experiment must be one of {sorted(EXPERIMENTS)}, got "
                         f"{sweep.experiment!r}")
    if not sweep.points:
        raise ValueError("config.points is empty: a sweep needs at least one point")
    explicit = {f[len("base."):] for f in command_line if f.startswith("base.")}
    check_base_overrides(sweep, explicit)
    module = importlib.import_module(EXPERIMENTS[sweep.experiment])
    resolved, seen = [], {}
    for index, overrides in enumerate(sweep.points):
        try:
            config = common.copy_with(sweep.base, runlocal=sweep.base.runlocal or sweep.runlocal)
            for dotted, value in overrides.items():
                common.set_field(config, dotted, value)
            config = common.apply_runlocal(config, explicit | set(overrides))
            module.check_config(config)
        except (TypeError, ValueError) as err:
            raise point_error(index, overrides, err) from None
        fingerprint = common.config_fingerprint(config)
        if fingerprint in seen:
            raise ValueError(f"sweep points {seen[fingerprint]} and {index} resolve to the same "
                             f"config ({overrides})")
        seen[fingerprint] = index
        resolved.append((dict(overrides), config, fingerprint))
    return resolved


def read_rows(path: str) -> list[dict]:
    """The rows of a results.jsonl file (none when it does not exist).

    A last line without its newline is an append cut off by a kill; it is skipped (the next
    append removes it).

    Raises:
      ValueError: naming the file and the line (counting from 1) that is not a JSON object.
    """
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    complete = lines[:-1]  # after the last newline: empty, or an interrupted append
    if lines[-1]:
        logging.warning("%s: skipping the unfinished last line %d (an interrupted append)",
                        path, len(lines))
    rows = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path}, line {number}: not a JSON row ({err}); fix or remove "
                             "that line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: not a sweep row (a JSON object)")
        rows.append(row)
    return rows


def append_row(path: str, row: dict) -> None:
    """Appends one JSON line to ``path``: one write under a file lock (safe with concurrent
    writers; see ``jaxprune.workdir.append_line``)."""
    workdir.append_line(path, json.dumps(row, sort_keys=True))


def seeds_of(config) -> dict:
    """Every field named ``seed`` (at any depth) of ``config``, by dotted name."""
    found = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            elif key == "seed":
                found[name] = value

    walk(config.to_dict(), "")
    return found


def describe(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base config"


# Fields a sweep's work directory may change between runs: rows are keyed by each point's own
# fingerprint, so points can be added (or the reports changed) in the same directory.
FREE_FIELDS = common.OUTPUT_FIELDS + ("points", "table", "plot", "description")


def prepare_points(resolved: list, module) -> common.Resources:
    """Loads what every point needs (models, texts, layer plans) and checks it, before work.

    Raises:
      ValueError: naming the point and its field.
    """
    resources = common.Resources()
    for index, (overrides, config, _) in enumerate(resolved):
        try:
            module.prepare(config, resources)
        except (TypeError, ValueError, FileNotFoundError) as err:
            raise point_error(index, overrides, err) from None
    return resources


def unfinished_dir(sweep_dir: str, fingerprint: str) -> str:
    """The folder point ``fingerprint`` keeps its partial work in (``UNFINISHED``)."""
    return os.path.join(sweep_dir, UNFINISHED, fingerprint)


def run_one(index: int, resolved: list, module, resources, provenance: dict,
            sweep_dir: str) -> dict:
    """Runs point ``index`` and returns its row (see the module docstring of the binary);
    the point keeps its partial work under ``unfinished_dir(sweep_dir, ...)``."""
    overrides, config, fingerprint = resolved[index]
    common.reset_peak_memory()
    start = time.perf_counter()
    outcome = module.run_point(config, resources, keep_dir=unfinished_dir(sweep_dir, fingerprint))
    wall = time.perf_counter() - start
    return {
        "point": index, "overrides": overrides, "fingerprint": fingerprint,
        "config": config.to_dict(), "seeds": seeds_of(config),
        "metrics": outcome["metrics"],
        # What the job chose (blocks removed, scores) and its training curve, if any.
        "details": outcome.get("details", {}), "curve": outcome.get("curve", []),
        "timings": {**outcome["timings"], "wall_seconds": wall},
        "peak_memory_mb": common.peak_memory_mb(),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        **provenance,
    }


def run_points(sweep, resolved: list, todo: list[int], module, resources, done: dict) -> None:
    """Runs the points ``todo``, appending each row to results.jsonl as it finishes."""
    provenance = {"git": common.git_revision(), "packages": common.package_versions(),
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    sweep_start = time.perf_counter()
    for count, index in enumerate(todo, start=1):
        overrides, _, fingerprint = resolved[index]
        logging.info("point %d (%d/%d to run): %s", index, count, len(todo), describe(overrides))
        common.write_json_atomic(os.path.join(sweep.workdir, PROGRESS), {
            "point": index, "fingerprint": fingerprint, "overrides": overrides,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat()})
        row = run_one(index, resolved, module, resources, provenance, sweep.workdir)
        append_row(os.path.join(sweep.workdir, RESULTS), row)
        shutil.rmtree(unfinished_dir(sweep.workdir, fingerprint), ignore_errors=True)
        done[fingerprint] = row
        elapsed = time.perf_counter() - sweep_start
        logging.info("point %d done in %.1f s: %s; %d left, about %.0f s", index,
                     row["timings"]["wall_seconds"], row["metrics"], len(todo) - count,
                     elapsed / count * (len(todo) - count))
    progress = os.path.join(sweep.workdir, PROGRESS)
    if os.path.exists(progress):
        os.unlink(progress)
    with contextlib.suppress(OSError):  # left in place while a point without a row keeps work
        os.rmdir(os.path.join(sweep.workdir, UNFINISHED))


def run_sweep(sweep, *, dry_run: bool = False,
              command_line: set[str] | frozenset = frozenset()) -> list[dict]:
    """Runs the points of ``sweep`` that have no row yet in its workdir; writes the reports.

    The work directory is claimed first (``common.claimed_workdir``: locked for the whole
    sweep, refused when it holds a sweep of another experiment or base config), then every
    point is prepared, then the points without a row run.

    Args:
      sweep: a sweep config with ``workdir`` set.
      dry_run: stop after resolving and checking every point (nothing is written).
      command_line: sweep fields set on the command line (see ``resolve_points``).

    Returns:
      The rows of this sweep's points, in point order.
    """
    resolved = resolve_points(sweep, command_line)
    module = importlib.import_module(EXPERIMENTS[sweep.experiment])
    claim = (contextlib.nullcontext(lambda: "dry run") if dry_run
             else common.claimed_workdir(sweep, ignore=FREE_FIELDS))
    with claim as commit:
        resources = prepare_points(resolved, module)
        commit()
        done = {row.get("fingerprint"): row
                for row in read_rows(os.path.join(sweep.workdir, RESULTS))}
        todo = [i for i, (_, _, fp) in enumerate(resolved) if fp not in done]
        logging.info("%d points, %d done already, %d to run", len(resolved),
                     len(resolved) - len(todo), len(todo))
        if dry_run:
            for index, (overrides, _, fp) in enumerate(resolved):
                print(f"{index:3d} {'done' if fp in done else 'todo'} {fp[:12]} "
                      f"{describe(overrides)}")
            return [done[fp] for _, _, fp in resolved if fp in done]
        run_points(sweep, resolved, todo, module, resources, done)
        rows = [done[fp] for _, _, fp in resolved]
        sweep_report.write_reports(sweep, rows)
    return rows
