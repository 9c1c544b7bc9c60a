"""Plumbing shared by the experiment binaries."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes ``payload`` as JSON so that ``path`` is either absent, old or complete.

    The file is written next to its destination and renamed into place, so a killed process
    never leaves a half-written file behind.

    Args:
      path: destination file; its directory is created when missing.
      payload: anything ``json.dump`` accepts.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
