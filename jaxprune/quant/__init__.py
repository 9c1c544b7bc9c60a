"""Weight quantization: qwix's grid and ``QArray``, round-to-nearest, GPTQ, and SparseGPT's
joint pruning and quantization (``jaxprune.oneshot.SparseGPT(quant=spec)``).

qwix provides the representation (``qwix.QArray``), the numerics and round-to-nearest
(``qwix.quantize``); jaxprune adds the solves qwix lacks for pruned models: GPTQ run block by
block on the one-shot engine keeping each kernel's mask, and the joint sweep. This package
holds the grid (``QuantSpec``) and sizes; the quantizers the engine takes (``GPTQ``,
``RoundToNearest``) live in ``jaxprune.oneshot.quantizers``.
"""

from jaxprune.quant.size import is_2_of_4, model_storage_bytes, qarray_bits, qarray_bytes
from jaxprune.quant.spec import (
    BITS,
    QuantSpec,
    check_quant_settings,
    fake_quantize,
    group_scale_zero,
    quantize_codes,
)

__all__ = [
    "BITS",
    "QuantSpec",
    "check_quant_settings",
    "fake_quantize",
    "group_scale_zero",
    "is_2_of_4",
    "model_storage_bytes",
    "qarray_bits",
    "qarray_bytes",
    "quantize_codes",
]
