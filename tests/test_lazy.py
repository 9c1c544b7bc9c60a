"""tests/lazy.py: a reference module is imported by the tests that use it, not by collection."""

import inspect

import pytest

from tests import lazy


def test_collection_probes_do_not_import_and_public_names_do():
    missing = lazy.LazyModule("jaxprune_no_such_module")
    # What pytest's collection asks of a module-level object: answered without an import.
    for probe in ("__test__", "_pytestfixturefunction", "__wrapped__", "_mock_name"):
        assert getattr(missing, probe, None) is None
    assert not inspect.isclass(missing) and not callable(missing)
    with pytest.raises(ModuleNotFoundError, match="jaxprune_no_such_module"):
        missing.anything  # noqa: B018 - the read is the test
    assert lazy.LazyModule("json").dumps([1]) == "[1]"
