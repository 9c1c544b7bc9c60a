"""Config-style one-shot fields for tests: the defaults of configs/oneshot_base.py (the fields
``jaxprune.oneshot.settings_from_config`` reads) with a test's own overrides, so that a new
setting needs no edit of every test that builds settings by name."""

import ml_collections

from configs.oneshot_base import add_pruning_fields


def oneshot_fields(**overrides) -> dict:
    """The pruning fields of a one-shot config, as a dict, with ``overrides`` applied.

    Raises:
      KeyError: for an override that is not a pruning field.
    """
    config = ml_collections.ConfigDict()
    add_pruning_fields(config, "wanda", "per_output")
    fields = config.to_dict()
    unknown = set(overrides) - set(fields)
    if unknown:
        raise KeyError(f"not one-shot pruning fields: {sorted(unknown)}")
    return fields | overrides
