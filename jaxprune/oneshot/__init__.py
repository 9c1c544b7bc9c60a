"""One-shot pruning with calibration data, block by block; methods are values.

Built in: ``MAGNITUDE``, ``OBD``, ``OBD_FISHER``, ``WANDA``, ``SparseGPT(blocksize, damp)``,
``ria_method(ria_alpha)``, ``ALPS(rho, iters, cg_steps, damp)``,
``wanda_pp_method(rgs_alpha)``; a criterion of one's own is
``ScoreMethod(score_fn)``; ``DSnoT(base)`` refines any of their masks and
``ChannelPermutation(base)`` runs any N:M one on permuted inputs; ``KEEP_NONZERO`` prunes
nothing. Quantizers (``RoundToNearest(spec)``, ``GPTQ(spec)``) quantize each block after it is
pruned, and ``SparseGPT(quant=spec)`` prunes and quantizes in one sweep. Configs name them
through ``registry.METHODS``, ``registry.REFINEMENTS`` and ``registry.QUANTIZERS``.
"""

from jaxprune.oneshot import registry
from jaxprune.oneshot.alps import ALPS, alps_method, alps_prune_layer
from jaxprune.oneshot.checkpoint import restore_pruned
from jaxprune.oneshot.dsnot import DSnoT, dsnot_refine, dsnot_refinement
from jaxprune.oneshot.engine import (
    ORDERS,
    OneShotConfig,
    OneShotResult,
    achieved_sparsity,
    check_quantize_model,
    plan_oneshot,
    prune_oneshot,
    quantize_model,
)
from jaxprune.oneshot.fisher import empirical_fisher_diagonal
from jaxprune.oneshot.maskllm import MaskLLM, candidate_masks, learn_nm_masks
from jaxprune.oneshot.methods import (
    FISHER,
    GRAM,
    INPUT_NORMS,
    KEEP_NONZERO,
    MAGNITUDE,
    OBD,
    OBD_FISHER,
    WANDA,
    InputStatistic,
    KeepNonzero,
    LayerPruning,
    ModelStatistic,
    OneShotMethod,
    ScoreMethod,
    SparseGPT,
)
from jaxprune.oneshot.owl import OWL, outlier_ratio, owl_sparsities
from jaxprune.oneshot.permutation import ChannelPermutation, kept_score, ria_permutation
from jaxprune.oneshot.quantizers import (
    EMBEDDING_PATH,
    GPTQ,
    QuantizedLayer,
    RoundToNearest,
    gptq_quantize_layer,
    quantize_embedding,
    rtn_quantize_kernel,
)
from jaxprune.oneshot.reconstruct import (
    BlockReconstruction,
    median_error_cut,
    reconstruct_block,
)
from jaxprune.oneshot.regional import (
    REGIONAL_GRADIENT,
    RegionalStatistic,
    RegionalStats,
    regional_gradients,
    rgs_score,
    wanda_pp_method,
)
from jaxprune.oneshot.registry import settings_from_config
from jaxprune.oneshot.ria import ria_method, ria_score
from jaxprune.oneshot.sparsegpt import (
    SweepResult,
    check_sparsegpt_settings,
    sparsegpt_prune_layer,
    sparsegpt_sweep,
    sparsegpt_with_retry,
    sweep_with_retry,
)
from jaxprune.oneshot.stats import InputStats, add_input_stats, batch_input_stats
from jaxprune.oneshot.streaming import (
    StreamedResult,
    plan_streamed,
    prune_streamed,
    read_streamed_masks,
    streamed_sparsity,
)

__all__ = [
    "ALPS",
    "BlockReconstruction",
    "ChannelPermutation",
    "DSnoT",
    "EMBEDDING_PATH",
    "FISHER",
    "GPTQ",
    "GRAM",
    "INPUT_NORMS",
    "InputStatistic",
    "InputStats",
    "KEEP_NONZERO",
    "KeepNonzero",
    "LayerPruning",
    "MAGNITUDE",
    "MaskLLM",
    "ModelStatistic",
    "OBD",
    "OBD_FISHER",
    "ORDERS",
    "OWL",
    "OneShotConfig",
    "OneShotMethod",
    "OneShotResult",
    "QuantizedLayer",
    "REGIONAL_GRADIENT",
    "RegionalStatistic",
    "RegionalStats",
    "RoundToNearest",
    "ScoreMethod",
    "SparseGPT",
    "StreamedResult",
    "SweepResult",
    "WANDA",
    "achieved_sparsity",
    "add_input_stats",
    "alps_method",
    "alps_prune_layer",
    "batch_input_stats",
    "candidate_masks",
    "check_quantize_model",
    "check_sparsegpt_settings",
    "dsnot_refine",
    "dsnot_refinement",
    "empirical_fisher_diagonal",
    "gptq_quantize_layer",
    "kept_score",
    "learn_nm_masks",
    "median_error_cut",
    "outlier_ratio",
    "owl_sparsities",
    "plan_oneshot",
    "plan_streamed",
    "prune_oneshot",
    "prune_streamed",
    "quantize_embedding",
    "quantize_model",
    "read_streamed_masks",
    "reconstruct_block",
    "regional_gradients",
    "registry",
    "restore_pruned",
    "rgs_score",
    "ria_method",
    "ria_permutation",
    "ria_score",
    "rtn_quantize_kernel",
    "settings_from_config",
    "sparsegpt_prune_layer",
    "sparsegpt_sweep",
    "sparsegpt_with_retry",
    "streamed_sparsity",
    "sweep_with_retry",
    "wanda_pp_method",
]
