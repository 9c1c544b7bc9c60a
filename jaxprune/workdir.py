"""Work directories that are safe to re-run, resume and share.

A job that writes a work directory (checkpoints, results) records there, in ``run.json``, the
fingerprint of the configuration it ran and the code version. The rules:

* the same fingerprint resumes (or, for a finished run, reuses) what is there;
* a different fingerprint stops before any work, naming the fields that differ; the ways out
  are a new work directory or ``overwrite=True``, which moves the old content aside into a
  sibling directory ``WORKDIR.replaced-<UTC time>`` (nothing is deleted);
* one process at a time: a lock file (``filelock``, an OS lock released when the process
  dies, even by ``kill -9``) makes a second process stop at once, naming the holder's PID;
* the directory is checked (a directory or creatable, writable, free space) before a model is
  loaded.

A differing code version alone does not stop a resume (a fix may not change the numbers); it
is logged and the record keeps the version each run started with.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from absl import logging

RUN_RECORD = "run.json"
LOCK_FILE = ".lock"
OWNER_FILE = ".lock.owner"
_OWN_FILES = (LOCK_FILE, OWNER_FILE)


class WorkdirError(ValueError):
    """The work directory cannot be used: not a directory, not writable, too little space."""


class WorkdirBusyError(RuntimeError):
    """Another process holds the work directory's lock."""


class ConfigMismatchError(ValueError):
    """The work directory holds a run of another configuration."""


def process_umask() -> int:
    """The process's umask: from ``/proc/self/status`` on Linux, which reads it without
    changing it; elsewhere set and restored at once (a race with threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_as_created(path: str, *, directory: bool = False) -> None:
    """Gives ``path`` the mode an ordinary ``open``/``mkdir`` would: 0666 (0777) less the umask.

    ``tempfile.mkstemp`` and ``mkdtemp`` create private files (0600, 0700); a result renamed
    from one into place would stay unreadable by a lab's other users.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~process_umask())


def free_bytes(path: str) -> int:
    """Free bytes for an unprivileged user on the file system holding ``path`` (or the nearest
    existing parent)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    usage = os.statvfs(probe)
    return usage.f_bavail * usage.f_frsize


def check_workdir(path: str, *, need_bytes: int = 0, field: str = "config.workdir") -> None:
    """Checks that ``path`` is, or can be created as, a writable directory with room to spare.

    Creates the directory (and its parents) when missing, then writes and removes a probe file.

    Args:
      path: the work directory.
      need_bytes: free space the job will need there (0: no check).
      field: how the caller names the setting, for the messages.

    Raises:
      WorkdirError: naming the field, the path and what is wrong.
    """
    if not path:
        raise WorkdirError(f"{field} is empty; give a directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"{field}={path!r} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise WorkdirError(f"{field}={path!r} is not a writable directory: {err.strerror}") \
            from None
    free = free_bytes(path)
    if need_bytes and free < need_bytes:
        raise WorkdirError(f"{field}={path!r} has {free / 1e6:.0f} MB free; this job writes "
                           f"about {need_bytes / 1e6:.0f} MB there")


def _owner_text() -> str:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return f"PID {os.getpid()} on host {socket.gethostname()} since {started}"


@contextlib.contextmanager
def locked(path: str, *, field: str = "config.workdir") -> Iterator[None]:
    """Holds the work directory's lock for the ``with`` block; never waits.

    Args:
      path: an existing directory.
      field: how the caller names the setting, for the message.

    Raises:
      WorkdirBusyError: when another process holds it, naming that process's PID and host.
    """
    import filelock  # here, so that the helpers above serve model I/O without it

    lock = filelock.FileLock(os.path.join(path, LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        try:
            with open(os.path.join(path, OWNER_FILE)) as f:
                owner = f.read().strip()
        except OSError:
            owner = "another process"
        raise WorkdirBusyError(f"{field}={path!r} is in use by {owner}; wait for it to finish or "
                          "choose another work directory") from None
    try:
        write_atomic(os.path.join(path, OWNER_FILE), _owner_text() + "\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(path, OWNER_FILE))
        lock.release()


def write_atomic(path: str, payload: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Writes ``payload`` (text as UTF-8; or a function that writes to the open binary file,
    for what should not be built in memory first) so that ``path`` is either absent, old or
    complete.

    The file is written next to its destination, flushed to disk, given the mode an ordinary
    file gets (see ``chmod_as_created``) and renamed into place; the directory is created when
    missing.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(payload):
                payload(f)
            else:
                f.write(payload.encode() if isinstance(payload, str) else payload)
            f.flush()
            os.fsync(f.fileno())
        chmod_as_created(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"dotted.name": value}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(recorded: Mapping, current: Mapping, *, limit: int = 8) -> list[str]:
    """``"field: recorded -> current"`` for every field that differs between two configs."""
    old, new = flatten(recorded), flatten(current)
    lines = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, "<absent>"), new.get(name, "<absent>")
        if json.dumps(a, default=repr) != json.dumps(b, default=repr):
            lines.append(f"{name}: {a!r} -> {b!r}")
    return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


def _foreign_entries(path: str) -> list[str]:
    return sorted(e for e in os.listdir(path)
                  if e not in _OWN_FILES and not e.startswith(".probe-"))


def move_aside(path: str) -> str:
    """Moves everything in ``path`` except the lock into ``PATH.replaced-<UTC time>``; returns
    that directory."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = f"{os.path.abspath(path).rstrip(os.sep)}.replaced-{stamp}"
    os.makedirs(aside)
    chmod_as_created(aside, directory=True)
    for entry in _foreign_entries(path):
        shutil.move(os.path.join(path, entry), os.path.join(aside, entry))
    return aside


def read_record(path: str) -> dict | None:
    """The run record of a work directory, None when there is none.

    Raises:
      ConfigMismatchError: when the record is not readable JSON.
    """
    record_path = os.path.join(path, RUN_RECORD)
    if not os.path.exists(record_path):
        return None
    try:
        with open(record_path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ConfigMismatchError(f"{record_path} is unreadable ({err}); move it away or pass "
                                  "overwrite=True") from None


def _mismatch_message(path: str, record: dict | None, config: Mapping, field: str,
                      overwrite_flag: str) -> str:
    ways_out = (f"use another work directory, or pass {overwrite_flag} to move the old content "
                f"aside into {os.path.abspath(path).rstrip(os.sep)}.replaced-<time>")
    if record is None:
        return (f"{field}={path!r} holds files ({', '.join(_foreign_entries(path)[:5])}) but no "
                f"{RUN_RECORD}: it was not written by a run of this configuration; {ways_out}")
    differences = config_differences(record.get("config", {}), config)
    return (f"{field}={path!r} holds a run of another configuration; fields that differ "
            f"(recorded -> this run): {'; '.join(differences) or 'none (fingerprint rule changed)'}"
            f". To resume that run, repeat its configuration; otherwise {ways_out}")


def claim_state(path: str, *, config: Mapping, fingerprint: str, overwrite: bool = False,
                field: str = "config.workdir",
                overwrite_flag: str = "--config.overwrite=True") -> str:
    """What ``claim`` would do, without writing anything: ``"new"``, ``"resume"`` or
    ``"replace"`` (another run that ``overwrite`` moves aside).

    Raises:
      ConfigMismatchError: when the directory holds another configuration's run (or files
        without a record) and ``overwrite`` is false.
    """
    try:
        record = read_record(path)
    except ConfigMismatchError:
        if not overwrite:
            raise
        return "replace"
    if record is not None and record.get("fingerprint") == fingerprint:
        return "resume"
    if record is None and not _foreign_entries(path):
        return "new"
    if not overwrite:
        raise ConfigMismatchError(
            _mismatch_message(path, record, config, field, overwrite_flag))
    return "replace"


def claim(path: str, *, config: Mapping, fingerprint: str, code_version: str = "unknown",
          overwrite: bool = False, field: str = "config.workdir",
          overwrite_flag: str = "--config.overwrite=True") -> str:
    """Claims ``path`` for a run of ``config``; call it while holding ``locked(path)``.

    Args:
      path: an existing, writable directory.
      config: the resolved configuration as a nested dict (for naming differences).
      fingerprint: what identifies the computation (equal fingerprints, equal results).
      code_version: recorded, and logged when a resume runs other code.
      overwrite: move another run's content aside instead of refusing.
      field, overwrite_flag: how the caller names the setting and the way out, for messages.

    Returns:
      ``"new"`` for an empty directory (or one just cleared), ``"resume"`` when the directory
      holds a run of the same fingerprint.

    Raises:
      ConfigMismatchError: when the directory holds another configuration's run (or files
        without a record) and ``overwrite`` is false; nothing is changed then.
    """
    state = claim_state(path, config=config, fingerprint=fingerprint, overwrite=overwrite,
                        field=field, overwrite_flag=overwrite_flag)
    if state == "resume":
        recorded = read_record(path).get("code_version")
        if recorded != code_version:
            logging.warning("resuming %s, started by code %s, with code %s", path, recorded,
                            code_version)
        return state
    if state == "replace":
        logging.warning("moved the previous content of %s to %s", path, move_aside(path))
    write_atomic(os.path.join(path, RUN_RECORD), json.dumps({
        "fingerprint": fingerprint, "code_version": code_version, "config": config,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }, indent=2, sort_keys=True, default=repr) + "\n")
    return "new"


def _remove_if_unused(path: str) -> None:
    """Removes a directory that holds nothing but this module's lock files."""
    if os.path.isdir(path) and not _foreign_entries(path):
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def open_workdir(path: str, *, config: Mapping, fingerprint: str, code_version: str = "unknown",
                 overwrite: bool = False, field: str = "config.workdir") -> Iterator:
    """A work directory checked, locked and vetted for the ``with`` block.

    Checks the directory (``check_workdir``), takes its lock (``locked``) and makes sure it
    holds nothing of another configuration (``claim_state``), all before the caller loads
    anything. Yields ``commit()``, which records the claim (``claim``) and returns ``"new"`` or
    ``"resume"``: call it once the job's inputs are checked, before writing. When the block
    fails in a directory this call created and nothing was written there, the directory is
    removed again, so refused input leaves nothing on disk.

    Raises:
      WorkdirError, WorkdirBusyError, ConfigMismatchError: before any work, naming ``field``.
    """
    existed = os.path.isdir(path)
    check_workdir(path, field=field)
    arguments = dict(config=config, fingerprint=fingerprint, overwrite=overwrite, field=field)
    try:
        with locked(path, field=field):
            claim_state(path, **arguments)
            yield functools.partial(claim, path, code_version=code_version, **arguments)
    except BaseException:
        if not existed:
            _remove_if_unused(path)
        raise


def append_line(path: str, line: str) -> None:
    """Appends one line to a file with a single ``write`` under an exclusive lock.

    Writers in several processes (or threads) never interleave or lose lines: each holds an
    OS lock on the file itself (``fcntl.flock``, released if the writer dies) while it writes
    the whole line with ``O_APPEND``. A last line cut off by a writer killed mid-write is first
    truncated away.

    Args:
      path: the file (created with the ordinary mode when missing).
      line: text without a newline; one is added.

    Raises:
      ValueError: if ``line`` contains a newline.
    """
    if "\n" in line:
        raise ValueError("append_line writes one line; the text contains a newline")
    payload = (line + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _truncate_partial_line(fd)
        if os.write(fd, payload) != len(payload):
            raise OSError(f"short write appending to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def _truncate_partial_line(fd: int) -> None:
    """Cuts a last line that lacks its newline (an interrupted append) from an open file."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep = os.pread(fd, size, 0).rfind(b"\n") + 1
    os.ftruncate(fd, keep)
