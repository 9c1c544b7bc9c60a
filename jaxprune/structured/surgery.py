"""Structured surgery: a smaller dense Llama with whole heads, groups, channels or blocks cut.

The coupled dimensions of the Llama family, as (tensor, axis) pairs in Hugging Face layout
(``[out, in]`` weights) that shrink together:

* a query head ``i``: rows ``i*d .. i*d+d-1`` of ``q_proj`` (and its bias), the same columns of
  ``o_proj``;
* a KV group ``g``: rows of ``k_proj`` and ``v_proj`` (and biases), plus every query head that
  reads it (heads ``g*r .. g*r+r-1`` with ``r = num_heads / num_kv_heads``);
* an MLP channel ``c``: row ``c`` of ``gate_proj`` and ``up_proj``, column ``c`` of
  ``down_proj``;
* a hidden channel ``j``: column ``j`` of the embedding, of the LM head and of every projection
  that reads the residual stream (q, k, v, gate, up), row ``j`` of every projection that writes
  it (o, down), entry ``j`` of every RMSNorm scale (Gemma's four norms per block included).

Gemma multiplies the embedding by ``sqrt(hidden_size)`` on input; a hidden cut shrinks that
factor, so the kept embedding columns are scaled up to make up for it, and a tied head, which
reads the same matrix, gets the inverse factor in the final norm's (``1 + w``) scale.

The head dimension and RoPE are never cut. Surgery returns a new model whose config has
per-block widths; the forward pass needs nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from jaxprune.models import Llama, hf_tensors_from_model, model_from_hf_tensors

KeepSpec = Mapping[int, Sequence[int]] | None
PROJECTIONS_READING_HIDDEN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                              "mlp.gate_proj", "mlp.up_proj")
PROJECTIONS_WRITING_HIDDEN = ("self_attn.o_proj", "mlp.down_proj")
# Qwen3's norms of one head's query and key: [head_dim], untouched by head and hidden cuts.
HEAD_NORMS = ("self_attn.q_norm.weight", "self_attn.k_norm.weight")


def _param_dtype(model: Llama):
    return model.embed_tokens.embedding[...].dtype


def _check_keep(name: str, keep: Sequence[int], size: int, where: str) -> np.ndarray:
    indices = np.asarray(list(keep), dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"{where}: {name} would keep none of {size}; keep at least one")
    if indices.min() < 0 or indices.max() >= size:
        raise ValueError(f"{where}: {name} indices must be in [0, {size}), got "
                         f"{sorted(indices.tolist())}")
    if len(set(indices.tolist())) != indices.size:
        raise ValueError(f"{where}: {name} indices repeat: {sorted(indices.tolist())}")
    return np.sort(indices)


def _check_blocks(spec: KeepSpec, num_layers: int, name: str) -> None:
    for block in spec or {}:
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not (
                0 <= block < num_layers):
            raise ValueError(f"{name}: block index {block!r} is out of range; the model has "
                             f"{num_layers} blocks (0..{num_layers - 1})")


def _rows(matrix: np.ndarray, units: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``matrix [units*width, ...]`` belonging to the kept units."""
    shaped = matrix.reshape(-1, width, *matrix.shape[1:])
    return shaped[units].reshape(units.size * width, *matrix.shape[1:])


def _cols(matrix: np.ndarray, units: np.ndarray, width: int) -> np.ndarray:
    """Columns of ``matrix [..., units*width]`` belonging to the kept units."""
    shaped = matrix.reshape(matrix.shape[0], -1, width)
    return shaped[:, units].reshape(matrix.shape[0], units.size * width)


def prune_width(model: Llama, *, heads: KeepSpec = None, kv_groups: KeepSpec = None,
                mlp_channels: KeepSpec = None, hidden: Sequence[int] | None = None,
                rescale_norms: bool = True) -> Llama:
    """A smaller model keeping the given heads, KV groups, MLP channels and hidden channels.

    Args:
      model: the model to cut (not changed).
      heads: block -> query heads to keep (original indices); blocks not named keep all. Each
        kept KV group must keep the same number of query heads (at least one).
      kv_groups: block -> KV groups to keep; a dropped group takes its query heads with it.
        When ``heads`` names the same block, its heads must all belong to kept groups.
      mlp_channels: block -> MLP channels to keep.
      hidden: hidden channels to keep (for the whole model).
      rescale_norms: when cutting hidden channels, multiply every RMSNorm scale by
        ``sqrt(hidden / kept)`` and the norms' epsilon by ``hidden / kept``: RMSNorm then
        computes exactly what it did over the full width whenever the cut channels were zero,
        so channels that carried nothing leave the logits unchanged.

    Returns:
      The new model, in the parameter dtype of ``model``.

    Raises:
      ValueError: for a block index out of range, an index outside a dimension, repeated
        indices, a cut that keeps nothing, or query heads that do not split evenly over the
        kept KV groups; each message names the block and the dimension.
    """
    config = model.config
    for name, spec in (("heads", heads), ("kv_groups", kv_groups),
                       ("mlp_channels", mlp_channels)):
        _check_blocks(spec, config.num_layers, name)
    tensors = hf_tensors_from_model(model)
    new_heads, new_kv, new_inter = [], [], []
    for b in range(config.num_layers):
        kept_heads, groups = _kept_heads(config, b, heads, kv_groups)
        inter = config.intermediate_size[b]
        channels = (_check_keep("mlp_channels", mlp_channels[b], inter, f"block {b}")
                    if mlp_channels and b in mlp_channels else np.arange(inter))
        _cut_block(tensors, f"model.layers.{b}.", kept_heads, groups, channels, config.head_dim)
        new_heads.append(int(kept_heads.size))
        new_kv.append(int(groups.size))
        new_inter.append(int(channels.size))
    hidden_size, eps = config.hidden_size, config.rms_norm_eps
    if hidden is not None:
        keep = _check_keep("hidden", hidden, config.hidden_size, "model")
        hidden_size = int(keep.size)
        ratio = config.hidden_size / hidden_size if rescale_norms else 1.0
        eps = eps * ratio
        _cut_hidden(tensors, keep, math.sqrt(ratio), config.norm_plus_one)
        if config.scale_embeddings:
            _keep_embedding_input(tensors, math.sqrt(config.hidden_size / hidden_size), config)
    new_config = config.replace(hidden_size=hidden_size, rms_norm_eps=eps,
                                num_heads=tuple(new_heads),
                                num_kv_heads=tuple(new_kv), intermediate_size=tuple(new_inter))
    return model_from_hf_tensors(new_config, tensors, param_dtype=_param_dtype(model))


def _kept_heads(config, b: int, heads: KeepSpec, kv_groups: KeepSpec):
    """``(query heads, KV groups)`` block ``b`` keeps, checked against grouped-query attention.

    Raises:
      ValueError: naming the block, for heads of dropped groups or uneven heads per group.
    """
    where = f"block {b}"
    nh, nkv = config.num_heads[b], config.num_kv_heads[b]
    per_group = nh // nkv
    groups = (_check_keep("kv_groups", kv_groups[b], nkv, where)
              if kv_groups and b in kv_groups else np.arange(nkv))
    if heads and b in heads:
        kept_heads = _check_keep("heads", heads[b], nh, where)
        outside = sorted(set((kept_heads // per_group).tolist()) - set(groups.tolist()))
        if outside:
            raise ValueError(f"{where}: heads {kept_heads.tolist()} include heads of KV "
                             f"groups {outside}, which kv_groups drops")
    else:
        kept_heads = np.asarray([h for h in range(nh) if h // per_group in set(groups)])
    counts = [int(np.sum(kept_heads // per_group == g)) for g in groups]
    if len(set(counts)) != 1 or counts[0] == 0:
        raise ValueError(f"{where}: grouped-query attention needs the same number of query "
                         f"heads (at least one) in every kept KV group; the cut keeps "
                         f"{dict(zip(groups.tolist(), counts, strict=True))} heads per group")
    return kept_heads, groups


def _cut_block(tensors: dict, prefix: str, kept_heads, groups, channels, d: int) -> None:
    """Keeps, in place, the given heads, KV groups and MLP channels of one block's tensors."""
    for name in ("q_proj.weight", "q_proj.bias"):
        key = prefix + "self_attn." + name
        if key in tensors:
            tensors[key] = _rows(tensors[key], kept_heads, d)
    for proj in ("k_proj", "v_proj"):
        for suffix in ("weight", "bias"):
            key = f"{prefix}self_attn.{proj}.{suffix}"
            if key in tensors:
                tensors[key] = _rows(tensors[key], groups, d)
    key = prefix + "self_attn.o_proj.weight"
    tensors[key] = _cols(tensors[key], kept_heads, d)
    for proj in ("gate_proj", "up_proj"):
        key = f"{prefix}mlp.{proj}.weight"
        tensors[key] = tensors[key][channels]
    key = prefix + "mlp.down_proj.weight"
    tensors[key] = tensors[key][:, channels]


def _scaled_norm(weight: np.ndarray, factor: float, plus_one: bool) -> np.ndarray:
    """An RMSNorm weight whose effective scale (``w``, or ``1 + w`` for Gemma) is multiplied by
    ``factor``."""
    return (1.0 + weight) * factor - 1.0 if plus_one else weight * factor


def _keep_embedding_input(tensors: dict, factor: float, config) -> None:
    """Multiplies the embedding by ``factor`` (the old over the new ``sqrt(hidden_size)``), so the
    residual stream starts as before the cut; a tied head's final norm takes ``1 / factor``."""
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"] * factor
    if config.tie_word_embeddings:
        tensors["model.norm.weight"] = _scaled_norm(tensors["model.norm.weight"], 1 / factor,
                                                    config.norm_plus_one)


def _cut_hidden(tensors: dict, keep: np.ndarray, norm_scale: float, plus_one: bool) -> None:
    """Keeps, in place, the hidden channels ``keep`` of every tensor that reads or writes the
    residual stream; RMSNorm effective scales are multiplied by ``norm_scale``."""
    for key in list(tensors):
        array = tensors[key]
        if key.endswith(HEAD_NORMS):
            continue  # q/k norms act on one head's vector, not the residual stream
        if key.endswith("norm.weight"):
            tensors[key] = _scaled_norm(array[keep], norm_scale, plus_one)
        elif (key in ("model.embed_tokens.weight", "lm_head.weight")
              or any(f".{p}.weight" in key for p in PROJECTIONS_READING_HIDDEN)):
            tensors[key] = array[:, keep]
        elif any(f".{p}.weight" in key for p in PROJECTIONS_WRITING_HIDDEN):
            tensors[key] = array[keep]


def model_without_blocks(config, tensors: Mapping[str, np.ndarray], blocks: Sequence[int], *,
                         param_dtype) -> Llama:
    """The model of ``tensors`` without the given decoder blocks, built once.

    Args:
      config: the configuration ``tensors`` belong to.
      tensors: the model's weights by Hugging Face name (``hf_tensors_from_model``), possibly
        edited (a fused block).
      blocks: indices of the blocks to remove.
      param_dtype: the dtype of the built model's parameters.

    Returns:
      The shallower model; the remaining blocks keep their order and weights.

    Raises:
      ValueError: for an index out of range, a repeated index, or removing every block.
    """
    drop = sorted(int(b) for b in blocks)
    for b in drop:
        if not 0 <= b < config.num_layers:
            raise ValueError(f"block index {b} is out of range; the model has "
                             f"{config.num_layers} blocks (0..{config.num_layers - 1})")
    if len(set(drop)) != len(drop):
        raise ValueError(f"block indices repeat: {drop}")
    keep = [b for b in range(config.num_layers) if b not in drop]
    if not keep:
        raise ValueError("removing every block leaves no model; keep at least one")
    kept = {}
    for key, array in tensors.items():
        if key.startswith("model.layers."):
            index, rest = key[len("model.layers."):].split(".", 1)
            if int(index) in drop:
                continue
            key = f"model.layers.{keep.index(int(index))}.{rest}"
        kept[key] = array
    return model_from_hf_tensors(config.select_blocks(keep), kept, param_dtype=param_dtype)


def remove_blocks(model: Llama, blocks: Sequence[int]) -> Llama:
    """A model without the given decoder blocks (depth pruning).

    Args:
      model: the model (not changed).
      blocks: indices of the blocks to remove.

    Returns:
      The shallower model; the remaining blocks keep their order and weights.

    Raises:
      ValueError: for an index out of range, a repeated index, or removing every block.
    """
    return model_without_blocks(model.config, hf_tensors_from_model(model), blocks,
                                param_dtype=_param_dtype(model))


def interpolate_blocks(model: Llama, first: int, weights: Sequence[float]) -> Llama:
    """Folds the run of ``len(weights)`` blocks starting at ``first`` into block ``first``:
    each of its parameters becomes ``sum_k weights[k] * (that parameter of block first + k)``,
    and the run's other blocks are removed. The caller checks the run (it lies inside the model
    and its blocks share one width) and the weights.

    Args:
      model: the model (not changed).
      first: index of the run's first block.
      weights: one weight per block of the run.

    Returns:
      The model with ``len(weights) - 1`` blocks fewer.
    """
    tensors = hf_tensors_from_model(model)
    prefixes = [f"model.layers.{first + k}." for k in range(len(weights))]
    for key in [k for k in tensors if k.startswith(prefixes[0])]:
        short = key[len(prefixes[0]):]
        tensors[key] = sum(w * tensors[p + short] for w, p in zip(weights, prefixes, strict=True))
    return model_without_blocks(model.config, tensors, range(first + 1, first + len(weights)),
                                param_dtype=_param_dtype(model))


def fuse_blocks(model: Llama, first: int, *, weight: float = 0.5) -> Llama:
    """Merges blocks ``first`` and ``first + 1`` into one block by interpolating their weights.

    A baseline for layer fusion: every parameter of the merged block is
    ``weight * first + (1 - weight) * second``, so the model keeps one block less; it attends
    as block ``first`` does (its attention window, if the two differ). Neighbouring
    blocks of a trained model are often similar enough for this to cost less than dropping
    one; docs/structured.md has the measured cost.

    Args:
      model: the model (not changed).
      first: index of the first of the two blocks.
      weight: share of the first block, in [0, 1].

    Returns:
      The model with ``num_layers - 1`` blocks.

    Raises:
      ValueError: for an index out of range, a weight outside [0, 1], or blocks of different
        widths.
    """
    config = model.config
    if not 0 <= first < config.num_layers - 1:
        raise ValueError(f"first must be in [0, {config.num_layers - 1}) so that block first + 1 "
                         f"exists, got {first}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    widths = [(config.num_heads[b], config.num_kv_heads[b], config.intermediate_size[b])
              for b in (first, first + 1)]
    if widths[0] != widths[1]:
        raise ValueError(f"blocks {first} and {first + 1} differ in width (heads, KV heads, "
                         f"MLP channels): {widths[0]} vs {widths[1]}")
    return interpolate_blocks(model, first, (weight, 1.0 - weight))
