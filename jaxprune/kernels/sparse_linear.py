"""``SparseLinear`` and the conversion of a 2:4-pruned Llama to the compressed kernels."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxprune.kernels.format import Sparse24, compress, decompress
from jaxprune.kernels.matmul import sparse24_matmul


class CompressedWeight(nnx.Variable):
    """Values or metadata of a compressed weight: not an ``nnx.Param``, so optimizers and
    pruners leave it alone."""


class SparseLinear(nnx.Module):
    """A linear layer whose weight is stored 2:4-compressed; a drop-in for ``nnx.Linear``.

    Args:
      sparse: the compressed weight ``W [out, in]`` (the transpose of a Flax kernel).
      bias: optional ``[out]`` bias.
      method: passed to ``sparse24_matmul`` ("auto" picks a kernel on GPU).
      interpret: run the Pallas kernels through the interpreter (CPU tests).
    """

    def __init__(self, sparse: Sparse24, bias=None, *, method: str = "auto",
                 interpret: bool = False):
        self.values = CompressedWeight(sparse.values)
        self.meta = CompressedWeight(sparse.meta)
        self.bias = nnx.Param(bias) if bias is not None else None
        self.method = method
        self.interpret = interpret

    def __call__(self, x):
        """``x [..., in] -> [..., out]``; ``x`` is cast to the weight's dtype for the product
        and the result back to ``x``'s dtype."""
        values = self.values[...]
        flat = x.reshape(-1, x.shape[-1]).astype(values.dtype)
        y = sparse24_matmul(flat, Sparse24(values, self.meta[...]), method=self.method,
                            interpret=self.interpret)
        y = y.reshape(*x.shape[:-1], y.shape[-1]).astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


def _owner_and_name(model, linear):
    """The module holding a ``PrunableLinear``'s layer, and the layer's attribute name."""
    *parents, name = linear.name.split("/")
    owner = model.layers[linear.block]
    for part in parents:
        owner = getattr(owner, part)
    return owner, name


def sparsify_llama(model, *, layers=None, method: str = "auto", interpret: bool = False):
    """A copy of a 2:4-pruned Llama whose linear layers use ``SparseLinear``.

    Args:
      model: a ``jaxprune.models.Llama`` whose chosen kernels are 2:4 along their input axis
        (as ``jaxprune.prune(..., pattern="2:4")`` or the one-shot engine leave them).
      layers: block-relative paths to convert (``"mlp/up_proj"``; default: every linear layer
        the model declares prunable, ``model.prunable_linears()``).
      method, interpret: passed to every ``SparseLinear``.

    Returns:
      The converted model; ``model`` is not changed.

    Raises:
      ValueError: naming a requested layer the model does not declare, or the first layer whose
        kernel is not 2:4 or has an input size that is not a multiple of 16.
    """
    converted = nnx.clone(model)
    declared = converted.prunable_linears()
    names = {linear.name for linear in declared}
    unknown = set(layers or ()) - names
    if unknown:
        raise ValueError(f"layers {sorted(unknown)} are not prunable linear layers of the model; "
                         f"allowed: {sorted(names)}")
    for linear in declared:
        if layers and linear.name not in layers:
            continue
        owner, name = _owner_and_name(converted, linear)
        layer = getattr(owner, name)
        try:
            sparse = compress(jnp.asarray(layer.kernel[...]).T)
        except ValueError as err:
            raise ValueError(f"layers/{linear.block}/{linear.name}: {err}") from None
        bias = layer.bias[...] if getattr(layer, "bias", None) is not None else None
        setattr(owner, name, SparseLinear(sparse, bias, method=method, interpret=interpret))
    return converted


def _dense_linear(layer: SparseLinear) -> nnx.Linear:
    """An ``nnx.Linear`` holding ``layer``'s weight decompressed."""
    kernel = decompress(Sparse24(layer.values[...], layer.meta[...])).T
    bias = layer.bias[...] if layer.bias is not None else None
    linear = nnx.Linear(kernel.shape[0], kernel.shape[1], use_bias=bias is not None,
                        param_dtype=kernel.dtype, rngs=nnx.Rngs(0),
                        kernel_init=lambda *_: kernel,
                        bias_init=(lambda *_: bias) if bias is not None else nnx.initializers.zeros)
    return linear


def densify_llama(model):
    """A copy of a model from ``sparsify_llama`` with its weights decompressed once: the
    dense fallback for large M.

    Above ``TILED_MAX_ROWS`` rows (a long prefill, batched evaluation) the product is
    compute-bound and ``sparse24_matmul`` decompresses the weight and runs a dense dot on
    every call. A model used for many such calls can pay the decompression once instead and
    keep the dense weights for the whole pass, at the dense model's memory. The zeros stay.

    Args:
      model: a model whose linear layers are (partly) ``SparseLinear``.

    Returns:
      A copy with every ``SparseLinear`` of its blocks replaced by an ``nnx.Linear``.
    """
    converted = nnx.clone(model)
    for linear in converted.prunable_linears():
        owner, name = _owner_and_name(converted, linear)
        layer = getattr(owner, name)
        if isinstance(layer, SparseLinear):
            setattr(owner, name, _dense_linear(layer))
    return converted
