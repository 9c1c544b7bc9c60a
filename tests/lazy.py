"""Modules imported on first use, so that collecting a test file does not import them.

torch, transformers and lm-eval take seconds to import (more on a clean checkout, where Python
compiles them first); each pytest-xdist worker collects every test file, but only the worker
that runs the tests needing them should pay (conftest.py orders those tests first).
"""

import importlib


class LazyModule:
    """Stands for module ``name``; the first read of a public attribute imports it (an
    ImportError then, not a skip: the test extras install every reference)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        # pytest's collection probes every module-level object for private markers
        # (``__test__``, ``_pytestfixturefunction``, ``__wrapped__``, ...); importing on those
        # would import every reference in every worker. Tests read only public names.
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(importlib.import_module(self._name), attribute)
