"""Pruning during training, and the training and distillation loops.

``sparse_training(optimizer, rule)`` keeps masks in the optimizer state and pruned weights at
exactly zero; the rules (``MaskRule`` values) are gradual magnitude pruning (optionally
straight-through), SNIP at initialisation, and the drop-and-grow methods SET and RigL; configs
name them through ``registry.RULES``. ``Trainer`` and ``distill`` run the loops, with orbax
checkpoints and resume (``train_with_checkpoints``).
"""

from jaxprune.training import registry
from jaxprune.training.algorithms import SET, GradualMagnitude, MaskRule, RigL, Snip
from jaxprune.training.lora import (
    LoraParam,
    MaskedLoraLinear,
    add_lora,
    lora_recover,
    merge_lora,
)
from jaxprune.training.qat import plain_model, quantization_aware
from jaxprune.training.registry import RULES, rule_from_config
from jaxprune.training.trainer import (
    Trainer,
    TrainSettings,
    batch_at,
    checkpoint_manager,
    distill,
    make_optimizer,
    measured_sparsity,
    params_fingerprint,
    restore_latest,
    save_checkpoint,
    train_with_checkpoints,
)
from jaxprune.training.transform import SparseTrainingState, masked_fraction, sparse_training

__all__ = [
    "RULES",
    "SET",
    "GradualMagnitude",
    "LoraParam",
    "MaskedLoraLinear",
    "MaskRule",
    "RigL",
    "Snip",
    "SparseTrainingState",
    "TrainSettings",
    "Trainer",
    "add_lora",
    "batch_at",
    "checkpoint_manager",
    "distill",
    "lora_recover",
    "make_optimizer",
    "merge_lora",
    "masked_fraction",
    "measured_sparsity",
    "params_fingerprint",
    "plain_model",
    "quantization_aware",
    "registry",
    "restore_latest",
    "rule_from_config",
    "save_checkpoint",
    "sparse_training",
    "train_with_checkpoints",
]
