"""The config boundary of one-shot pruning: names to method and allocation values.

Configs name a method (``config.method = "wanda"``); the library takes values
(``OneShotConfig(method=WANDA)``). Each registry maps a name to a value, or to a factory whose
keyword arguments are config fields of the same names (``SparseGPT(blocksize, damp)`` reads
``config.blocksize`` and ``config.damp``), so a setting has one name from the config file to
the solver. A new method is one entry here and its own module; the engine does not change.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from jaxprune.oneshot import (
    alps,
    dsnot,
    maskllm,
    methods,
    owl,
    permutation,
    quantizers,
    reconstruct,
    regional,
    ria,
)
from jaxprune.oneshot.engine import OneShotConfig

METHODS: dict[str, Any] = {
    "magnitude": methods.MAGNITUDE,
    "obd": methods.OBD,
    "obd_fisher": methods.OBD_FISHER,
    "wanda": methods.WANDA,
    "sparsegpt": methods.SparseGPT,
    "ria": ria.ria_method,
    "alps": alps.alps_method,
    "wanda_pp": regional.wanda_pp_method,
}
# "uniform": every block at the target sparsity (no allocation value).
ALLOCATIONS: dict[str, Any] = {"uniform": None, "owl": owl.OWL}
# "adam": each block's kept weights refit to the dense block's output (config.recon_*).
RECONSTRUCTIONS: dict[str, Any] = {"none": None, "adam": reconstruct.block_reconstruction}
# "maskllm": N:M masks learned end to end from the method's as a prior (config.maskllm_*).
MASK_LEARNERS: dict[str, Any] = {"none": None, "maskllm": maskllm.maskllm_settings}
# A refinement wraps the method's value (``config.refine``): "none" keeps the method's mask.
REFINEMENTS: dict[str, Any] = {"none": None, "dsnot": dsnot.dsnot_refinement}
# Quantization after each block (``config.quantize`` and ``config.quant_*``). "joint" is no
# quantizer: SparseGPT quantizes in its own sweep (``SparseGPT(quant=spec)``).
JOINT = "joint"
QUANTIZERS: dict[str, Any] = {"none": None, "rtn": quantizers.rtn_quantizer,
                              "gptq": quantizers.gptq_quantizer, JOINT: quantizers.quant_spec}
# config.method "dense" prunes nothing: alone, the job evaluates the model as loaded; with a
# quantizer, the engine runs with this method and quantizes the model keeping its zeros.
DENSE = "dense"
# OneShotConfig fields that come from a registry rather than straight from the config.
_FROM_REGISTRY = ("method", "allocation", "reconstruction", "learn_masks", "quantization")


def _is_factory(entry) -> bool:
    return inspect.isclass(entry) or inspect.isfunction(entry)


def _factory_options(entry) -> list[str]:
    """The config fields a factory reads: its parameters, less a dataclass's fields marked
    ``config_field=False`` (set by the registry from other fields)."""
    hidden = {f.name for f in dataclasses.fields(entry) if not f.metadata.get(
        "config_field", True)} if dataclasses.is_dataclass(entry) else set()
    return [p for p in inspect.signature(entry).parameters if p not in hidden]


def option_names(registry: dict[str, Any]) -> set[str]:
    """Every config field that some entry's factory reads."""
    return {name for entry in registry.values() if _is_factory(entry)
            for name in _factory_options(entry)}


def from_registry(registry: dict[str, Any], field: str, config) -> Any:
    """The value ``config[field]`` names, its factory called with the config's options.

    Args:
      registry: ``METHODS`` or ``ALLOCATIONS``.
      field: the config field holding the name.
      config: a mapping (a ``ConfigDict`` section) with the name and the factory's options.

    Returns:
      The method or allocation value.

    Raises:
      ValueError: for an unknown name (listing the registry) or an option the factory refuses.
    """
    name = config[field]
    if name not in registry:
        raise ValueError(f"config.{field}={name!r} is not one of {sorted(registry)}")
    entry = registry[name]
    if not _is_factory(entry):
        return entry
    options = {p: config[p] for p in _factory_options(entry) if p in config}
    try:
        return entry(**options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.{field}={name!r}: {err}") from None


def plain_fields() -> tuple[str, ...]:
    """``OneShotConfig`` fields copied from the config as they are (not the registry names,
    nor the fields marked ``config_field=False``, which only library callers set)."""
    return tuple(f.name for f in dataclasses.fields(OneShotConfig)
                 if f.name not in _FROM_REGISTRY and f.metadata.get("config_field", True))


def config_fields() -> set[str]:
    """Every config field the one-shot settings read: the plain fields, the two names and
    every registered factory's options."""
    return {*plain_fields(), *(set(_FROM_REGISTRY) - {"quantization"}), "refine", "permute",
            "quantize", *option_names(METHODS), *option_names(ALLOCATIONS),
            *option_names(REFINEMENTS), *option_names(RECONSTRUCTIONS),
            *option_names(MASK_LEARNERS), *option_names(QUANTIZERS)}


def settings_from_config(config) -> OneShotConfig:
    """The library's one-shot settings from a config section, converted once.

    Args:
      config: a ``ConfigDict`` (or mapping) with the fields of ``config_fields()``.

    Returns:
      A ``OneShotConfig`` holding method and allocation values: the method wrapped by the
      refinement ``config.refine`` names, if any, and then by ``ChannelPermutation`` if
      ``config.permute`` (so a refinement works on the permuted kernel).

    Raises:
      ValueError: naming the field for an unknown name or a bad option.
    """
    method = (methods.KEEP_NONZERO if config["method"] == DENSE
              else from_registry(METHODS, "method", config))
    refine = from_registry(REFINEMENTS, "refine", config)
    if refine is not None:
        try:
            method = refine(method)
        except ValueError as err:
            raise ValueError(f"config.refine={config['refine']!r}: {err}") from None
    if not isinstance(config["permute"], bool):
        raise ValueError(f"config.permute must be True or False, got {config['permute']!r}")
    if config["permute"]:
        method = permutation.ChannelPermutation(method)
    method, quantization = _quantization(method, config)
    return OneShotConfig(
        method=method,
        allocation=from_registry(ALLOCATIONS, "allocation", config),
        reconstruction=from_registry(RECONSTRUCTIONS, "reconstruction", config),
        learn_masks=from_registry(MASK_LEARNERS, "learn_masks", config),
        quantization=quantization,
        **{name: config[name] for name in plain_fields()})


def _quantization(method, config) -> tuple[Any, Any]:
    """``(method, quantizer)`` for ``config.quantize``: "joint" gives SparseGPT the spec and
    no quantizer; the others leave the method as it is.

    Raises:
      ValueError: naming the field, for an unknown name, a bad ``quant_*`` value, or "joint"
        with another method than SparseGPT or with a refinement or permutation around it.
    """
    quantizer = from_registry(QUANTIZERS, "quantize", config)
    if config["quantize"] != JOINT:
        return method, quantizer
    if not isinstance(method, methods.SparseGPT):
        raise ValueError(f"config.quantize='joint' quantizes inside SparseGPT's sweep: "
                         f"config.method must be 'sparsegpt' (without refine or permute), got "
                         f"{config['method']!r}")
    return dataclasses.replace(method, quant=quantizer), None
