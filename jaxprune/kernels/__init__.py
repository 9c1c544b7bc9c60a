"""2:4 sparse matmul: the compressed formats (bf16/f16 values, or int4 codes with group scales),
a jnp reference, Pallas GPU kernels, SparseLinear.

See docs/kernels.md for the format, the kernels, their roofline model (``roofline``), tuned
launch settings (``tuning``), CUDA lowering checks without a GPU (``lowering``) and the Pallas
API they rely on.
"""

from jaxprune.kernels.format import Sparse24, check_2_4, compress, decompress
from jaxprune.kernels.format_int4 import (
    Sparse24Int4,
    compress_int4,
    decompress_int4,
    sparse24_int4_matmul_reference,
)
from jaxprune.kernels.matmul import METHODS, sparse24_matmul, sparse24_matmul_reference
from jaxprune.kernels.pallas_sparse24 import (
    sparse24_matmul_decode,
    sparse24_matmul_splitk,
    sparse24_matmul_tiled,
)
from jaxprune.kernels.sparse_linear import (
    CompressedWeight,
    SparseLinear,
    densify_llama,
    sparsify_llama,
)

__all__ = [
    "METHODS",
    "CompressedWeight",
    "Sparse24",
    "Sparse24Int4",
    "SparseLinear",
    "check_2_4",
    "compress",
    "compress_int4",
    "decompress",
    "decompress_int4",
    "densify_llama",
    "sparse24_int4_matmul_reference",
    "sparse24_matmul",
    "sparse24_matmul_decode",
    "sparse24_matmul_reference",
    "sparse24_matmul_splitk",
    "sparse24_matmul_tiled",
    "sparsify_llama",
]
