"""Running a sweep: resolve and check its points, run those without a row, write the reports.

The logic behind ``experiments.sweep`` (the binary only adds flags), importable without
defining any flag. See that module's docstring and docs/experiments.md for what a sweep does.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import time

from absl import logging

from experiments import common, sweep_report

# config.experiment -> module providing check_config(config), prepare(config, resources) and
# run_point(config, resources) -> {"metrics": dict, "timings": dict, ...}.
EXPERIMENTS = {"prune": "experiments.oneshot_job", "train": "experiments.train_job",
               "structured": "experiments.structured_job"}

RESULTS = "results.jsonl"
PROGRESS = "progress.json"


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
        the field), or two points that resolve to the same config.
    """
    if sweep.experiment not in EXPERIMENTS:
        raise ValueError(f"config.experiment must be one of {sorted(EXPERIMENTS)}, got "
                         f"{sweep.experiment!r}")
    if not sweep.points:
        raise ValueError("config.points is empty: a sweep needs at least one point")
    module = importlib.import_module(EXPERIMENTS[sweep.experiment])
    resolved, seen = [], {}
    for index, overrides in enumerate(sweep.points):
        try:
            config = common.copy_with(sweep.base, runlocal=sweep.base.runlocal or sweep.runlocal)
            for dotted, value in overrides.items():
                common.set_field(config, dotted, value)
            explicit = {f[len("base."):] for f in command_line if f.startswith("base.")}
            config = common.apply_runlocal(config, explicit | set(overrides))
            module.check_config(config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"sweep point {index} {overrides}: {err}") from None
        fingerprint = common.config_fingerprint(config)
        if fingerprint in seen:
            raise ValueError(f"sweep points {seen[fingerprint]} and {index} resolve to the same "
                             f"config ({overrides})")
        seen[fingerprint] = index
        resolved.append((dict(overrides), config, fingerprint))
    return resolved


def read_rows(path: str) -> list[dict]:
    """The rows of a results.jsonl file (none when it does not exist)."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_row(path: str, row: dict) -> None:
    """Appends one JSON line to ``path`` atomically: the old rows and the new one are written
    to a temporary file that replaces ``path``."""
    text = ""
    if os.path.isfile(path):
        with open(path) as f:
            text = f.read()
    common.write_text_atomic(path, text + json.dumps(row, sort_keys=True) + "\n")


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


def run_sweep(sweep, *, dry_run: bool = False,
              command_line: set[str] | frozenset = frozenset()) -> list[dict]:
    """Runs the points of ``sweep`` that have no row yet in its workdir; writes the reports.

    Args:
      sweep: a sweep config with ``workdir`` set.
      dry_run: stop after resolving and checking every point.
      command_line: sweep fields set on the command line (see ``resolve_points``).

    Returns:
      The rows of this sweep's points, in point order.
    """
    resolved = resolve_points(sweep, command_line)
    module = importlib.import_module(EXPERIMENTS[sweep.experiment])
    resources = common.Resources()
    for index, (overrides, config, _) in enumerate(resolved):
        try:
            module.prepare(config, resources)
        except (TypeError, ValueError, FileNotFoundError) as err:
            raise ValueError(f"sweep point {index} {overrides}: {err}") from None
    results_path = os.path.join(sweep.workdir, RESULTS)
    done = {row["fingerprint"]: row for row in read_rows(results_path)}
    todo = [i for i, (_, _, fp) in enumerate(resolved) if fp not in done]
    logging.info("%d points, %d done already, %d to run", len(resolved),
                 len(resolved) - len(todo), len(todo))
    if dry_run:
        for index, (overrides, _, fp) in enumerate(resolved):
            print(f"{index:3d} {'done' if fp in done else 'todo'} {fp[:12]} {describe(overrides)}")
        return [done[fp] for _, _, fp in resolved if fp in done]

    provenance = {"git": common.git_revision(), "packages": common.package_versions(),
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    sweep_start = time.perf_counter()
    for count, index in enumerate(todo, start=1):
        overrides, config, fingerprint = resolved[index]
        logging.info("point %d (%d/%d to run): %s", index, count, len(todo), describe(overrides))
        common.write_json_atomic(os.path.join(sweep.workdir, PROGRESS), {
            "point": index, "fingerprint": fingerprint, "overrides": overrides,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat()})
        common.reset_peak_memory()
        start = time.perf_counter()
        outcome = module.run_point(config, resources)
        wall = time.perf_counter() - start
        row = {
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
        append_row(results_path, row)
        done[fingerprint] = row
        elapsed = time.perf_counter() - sweep_start
        logging.info("point %d done in %.1f s: %s; %d left, about %.0f s", index, wall,
                     outcome["metrics"], len(todo) - count, elapsed / count * (len(todo) - count))
    progress = os.path.join(sweep.workdir, PROGRESS)
    if os.path.exists(progress):
        os.unlink(progress)
    rows = [done[fp] for _, _, fp in resolved]
    sweep_report.write_reports(sweep, rows)
    return rows
