r"""Kill -9 at random moments, rerun the same command, compare with an uninterrupted run.

  python -m experiments.kill_resume --kills=5 --out=runs/kill_resume.json

For each binary (prune, sweep, train, structured, on their runlocal configs with the tiny
random model) it runs the command once to the end (the reference), then in a fresh work
directory starts the same command, kills it with SIGKILL after a random delay (uniform in
[0.15, 0.9] of the reference's wall time, seeded by ``--seed``), and starts it again, until
``--kills`` processes were killed before finishing; a last run completes the job. (A restart
that finishes before its kill ends a chain: it is compared too, and the job starts afresh.)
Every completed run is compared with the reference: every metric but wall-clock ones, the loss
curve, and the parameters (checkpoint arrays, exported safetensors bytes or their hash). A
last check runs two sweeps on one work directory at once: the second must refuse at once, and
the first must write every row exactly once.

Prints a markdown table and writes the details as JSON. Exits non-zero if anything differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from experiments import common

_KILLS = flags.DEFINE_integer("kills", 5, "Processes to kill per binary.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill delays.")
_BINARIES = flags.DEFINE_list("binaries", ["prune", "sweep", "train", "structured"],
                              "Which binaries to check.")
_OUT = flags.DEFINE_string("out", "", "JSON file for the details (none when empty).")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {
    "prune": ["experiments.prune", "--config=configs/wanda.py:runlocal",
              "--config.model=tiny-llama", "--config.save_checkpoint=True",
              "--config.save_hf=True"],
    "sweep": ["experiments.sweep", "--config=configs/sweeps/oneshot_table.py:runlocal"],
    "train": ["experiments.train", "--config=configs/gradual.py:rigl,runlocal",
              "--config.train.checkpoint_every=7"],
    "structured": ["experiments.structured", "--config=configs/structured.py:mlp,distill,runlocal",
                   "--config.train.steps=60", "--config.train.checkpoint_every=7",
                   "--config.train.log_every=10", "--config.save_hf=True"],
}
# Wall-clock measurements, which no two runs share.
TIMING_FIELDS = {"prune seconds", "peak memory MB", "tokens_per_second",
                 "dense_tokens_per_second", "seconds", "timings", "wall_seconds",
                 "peak_memory_mb", "finished", "started"}


def command(binary: str, workdir: str) -> list[str]:
    return [sys.executable, "-m", *COMMANDS[binary], f"--config.workdir={workdir}"]


def start(binary: str, workdir: str) -> subprocess.Popen:
    return subprocess.Popen(command(binary, workdir), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))


def run_to_end(binary: str, workdir: str) -> float:
    """Runs the command to completion; returns its wall time.

    Raises:
      RuntimeError: with the end of its stderr when it fails.
    """
    begin = time.perf_counter()
    process = start(binary, workdir)
    _, stderr = process.communicate(timeout=900)
    if process.returncode != 0:
        raise RuntimeError(f"{binary} failed in {workdir}:\n{stderr[-3000:]}")
    return time.perf_counter() - begin


def kill_repeatedly(binary: str, workdir: str, kills: int, reference_seconds: float,
                    rng: random.Random, on_finished) -> list[float]:
    """Starts the command and SIGKILLs it after random delays until ``kills`` processes died
    unfinished; returns the delays of those kills.

    When a restarted process finishes before its kill (the job was nearly done), the chain of
    kills is over: ``on_finished(workdir)`` checks that run's outcome, the directory is
    emptied, and the next attempt starts the job afresh.
    """
    moments = []
    for _ in range(8 * kills):
        if len(moments) == kills:
            break
        delay = rng.uniform(0.15, 0.9) * reference_seconds
        process = start(binary, workdir)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            moments.append(round(delay, 2))
            continue
        if process.returncode != 0:
            raise RuntimeError(f"{binary} failed after a kill:\n{process.stderr.read()[-3000:]}")
        on_finished(workdir)
        shutil.rmtree(workdir)
    return moments


def without_timings(value):
    """``value`` with every wall-clock field (``TIMING_FIELDS``) and work directory removed."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if k not in TIMING_FIELDS and k != "workdir"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def file_digest(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def checkpoint_digest(path: str) -> str | None:
    """SHA-256 over the arrays of an orbax checkpoint (its files hold timestamps)."""
    if not os.path.isdir(path):
        return None
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(path)
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(restored):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def outcome(workdir: str) -> dict:
    """What a finished run reports, less wall-clock fields: results.json, the exported weights,
    the curve's plot, the checkpoint's arrays, and (sweeps) the rows of results.jsonl."""
    with open(os.path.join(workdir, "results.json")) as f:
        results = without_timings(json.load(f))
    results.pop("saved", None)  # absolute paths of the outputs
    found = {"results": results,
             "hf weights": file_digest(os.path.join(workdir, "hf", "model.safetensors")),
             "loss.png": file_digest(os.path.join(workdir, "loss.png")),
             "checkpoint": checkpoint_digest(os.path.join(workdir, "checkpoint"))}
    rows_path = os.path.join(workdir, "results.jsonl")
    if os.path.exists(rows_path):
        with open(rows_path) as f:
            fingerprints = [json.loads(line)["fingerprint"] for line in f if line.strip()]
        found["rows"] = len(fingerprints)
        found["duplicate rows"] = len(fingerprints) - len(set(fingerprints))
    return found


def check_binary(binary: str, root: str, kills: int, rng: random.Random) -> dict:
    """Reference run, killed-and-rerun runs, comparisons (see the module docstring)."""
    reference_dir, killed_dir = (os.path.join(root, binary, name) for name in ("ref", "killed"))
    seconds = run_to_end(binary, reference_dir)
    expected = outcome(reference_dir)
    differing = []

    def compare(workdir):
        got = outcome(workdir)
        differing.append(sorted(k for k in expected if expected[k] != got.get(k)))

    moments = kill_repeatedly(binary, killed_dir, kills, seconds, rng, compare)
    run_to_end(binary, killed_dir)
    compare(killed_dir)
    return {"binary": binary, "reference_seconds": round(seconds, 1), "kills": len(moments),
            "kill_moments_seconds": moments, "completed_chains": len(differing),
            "identical": len(moments) >= kills and not any(differing),
            "differing": differing, "compared": sorted(k for k, v in expected.items() if v)}


def check_concurrent_sweeps(root: str) -> dict:
    """Two sweeps on one work directory: the second must stop at once, naming the first."""
    workdir = os.path.join(root, "concurrent")
    first = start("sweep", workdir)
    deadline = time.monotonic() + 300
    while not os.path.exists(os.path.join(workdir, "progress.json")):
        if time.monotonic() > deadline or first.poll() is not None:
            raise RuntimeError("the first sweep never started a point")
        time.sleep(0.05)
    begin = time.perf_counter()
    second = subprocess.run(command("sweep", workdir), cwd=REPO, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    second_seconds = time.perf_counter() - begin
    _, stderr = first.communicate(timeout=900)
    if first.returncode != 0:
        raise RuntimeError(f"the first sweep failed:\n{stderr[-3000:]}")
    found = outcome(workdir)
    refused = second.returncode != 0 and f"in use by PID {first.pid}" in second.stderr
    return {"binary": "two sweeps, one workdir", "second_refused": refused,
            "second_seconds": round(second_seconds, 1), "rows": found["rows"],
            "duplicate rows": found["duplicate rows"],
            "identical": refused and found["duplicate rows"] == 0,
            "rows_expected": len(found["results"]["rows"])}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(_BINARIES.value) - set(COMMANDS))
    if unknown or _KILLS.value < 1:
        raise app.UsageError(f"--binaries must name some of {sorted(COMMANDS)} (got {unknown}) "
                             f"and --kills must be >= 1 (got {_KILLS.value})")
    rng = random.Random(_SEED.value)
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as root:
        checks = [check_binary(b, root, _KILLS.value, rng) for b in _BINARIES.value]
        if "sweep" in _BINARIES.value:
            checks.append(check_concurrent_sweeps(root))
    rows = [{"binary": c["binary"], "kills": c.get("kills", "-"),
             "kill moments (s)": " ".join(map(str, c.get("kill_moments_seconds", []))) or "-",
             "runs completed": c.get("completed_chains", "-"),
             "identical": c["identical"]} for c in checks]
    print(common.markdown_table(rows, list(rows[0])))
    if _OUT.value:
        common.write_json_atomic(_OUT.value, {"checks": checks, "git": common.git_revision(),
                                              "cpus": os.cpu_count()})
    if not all(c["identical"] for c in checks):
        sys.exit(1)


if __name__ == "__main__":
    common.run_main(main)
