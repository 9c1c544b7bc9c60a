"""Weight quantization: qwix's representation and numerics, GPTQ and SparseGPT's joint mode."""

from jaxprune.quant.spec import (
    BITS,
    QuantSpec,
    fake_quantize,
    group_scale_zero,
    quantize_codes,
)

__all__ = [
    "BITS",
    "QuantSpec",
    "fake_quantize",
    "group_scale_zero",
    "quantize_codes",
]
