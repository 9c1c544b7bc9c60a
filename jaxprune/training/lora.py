"""LoRA recovery that keeps a pruned model's sparsity exactly.

Each chosen linear layer becomes ``MaskedLoraLinear``: its kernel ``W`` is frozen, and the
layer computes ``x (W + M * (s A B))`` with trainable ``A [in, r]``, ``B [r, out]`` (``B``
starts at zero, so training starts from the pruned model), ``s = alpha / r`` and ``M`` the
kernel's non-zero entries. The update never reaches a pruned weight, so the merged kernel
``W + M * (s A B)`` keeps every zero, and a 2:4 model stays 2:4. Everything else (embeddings,
norms, the head) stays frozen: the trainer's optimizer sees only ``A`` and ``B``
(``LoraParam``). On a quantized base (QLoRA) the frozen kernel holds the grid's values; the
merged kernels leave the grid, so a quantized deployment quantizes the merged model again
(GPTQ keeping its masks, ``jaxprune.oneshot.GPTQ``).

References:
  Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models"; Dettmers et al. 2023,
  "QLoRA: Efficient Finetuning of Quantized LLMs".
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune._checks import check_int, check_real
from jaxprune.training.trainer import Trainer, TrainSettings, train_with_checkpoints


class LoraParam(nnx.Param):
    """A LoRA factor: the only parameters a LoRA run trains."""


class FrozenWeight(nnx.Variable):
    """A base weight LoRA leaves as it is (not an ``nnx.Param``)."""


class MaskedLoraLinear(nnx.Module):
    """A frozen linear layer plus a masked low-rank update (module docstring).

    Args:
      linear: the ``nnx.Linear`` to adapt (its kernel and bias are copied, frozen).
      rank: the update's rank ``r``.
      alpha: the update's scale numerator (``s = alpha / r``).
      rngs: draws ``A`` (uniform, bound ``1 / sqrt(in)``, as LoRA's code initialises it).
    """

    def __init__(self, linear: nnx.Linear, *, rank: int, alpha: float, rngs: nnx.Rngs):
        kernel = linear.kernel[...]
        n_in, n_out = kernel.shape
        self.kernel = FrozenWeight(kernel)
        self.bias = FrozenWeight(linear.bias[...]) if linear.bias is not None else None
        self.keep = FrozenWeight(kernel != 0)
        bound = 1.0 / math.sqrt(n_in)
        self.lora_a = LoraParam(jax.random.uniform(rngs.params(), (n_in, rank), kernel.dtype,
                                                   -bound, bound))
        self.lora_b = LoraParam(jnp.zeros((rank, n_out), kernel.dtype))
        self.scale = alpha / rank

    def merged_kernel(self) -> jax.Array:
        """``W + M * (s A B)``: zero wherever ``W`` is."""
        update = self.scale * (self.lora_a[...] @ self.lora_b[...])
        return self.kernel[...] + jnp.where(self.keep[...], update, 0).astype(
            self.kernel.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x @ self.merged_kernel().astype(x.dtype)
        return y if self.bias is None else y + self.bias[...].astype(x.dtype)


def _chosen_linears(model, layers: str) -> list:
    """The prunable linears whose kernel path ``layers`` (a regex; empty: all) matches.

    Raises:
      ValueError: for a bad regex or one matching no linear layer.
    """
    try:
        pattern = re.compile(layers)
    except re.error as err:
        raise ValueError(f"lora layers {layers!r} is not a valid regular expression: {err}"
                         ) from None
    chosen = [t for t in model.prunable_linears() if pattern.search(t.path)]
    if not chosen:
        raise ValueError(f"lora layers {layers!r} matches no linear layer's kernel path "
                         f"(such as {model.prunable_linears()[0].path!r})")
    return chosen


def check_lora_settings(model, *, rank: int, alpha: float, layers: str) -> list:
    """Checks LoRA settings against ``model`` without copying it; returns the chosen linears.

    Raises:
      ValueError, TypeError: for a rank below 1, a non-positive alpha, or a regex matching
        nothing.
    """
    check_int("lora rank", rank, minimum=1)
    check_real("lora alpha", alpha, minimum=0.0, strict=True)
    return _chosen_linears(model, layers)


def _parent_and_name(block, name: str):
    parts = name.split("/")
    node = block
    for part in parts[:-1]:
        node = getattr(node, part)
    return node, parts[-1]


def add_lora(model, *, rank: int = 8, alpha: float = 16.0, layers: str = "",
             seed: int = 0):
    """A copy of ``model`` whose chosen linear layers are ``MaskedLoraLinear``.

    Args:
      model: a ``jaxprune.models.Llama`` (dense, pruned or quantized; left unchanged).
      rank: the updates' rank, >= 1.
      alpha: the updates' scale numerator, > 0.
      layers: regex over the kernel paths (``layers/3/mlp/up_proj/kernel``); empty: all.
      seed: draws the ``A`` factors.

    Returns:
      The adapted model; its logits equal ``model``'s until ``B`` is trained.

    Raises:
      ValueError: for a rank below 1, a non-positive alpha, or a regex matching nothing.
    """
    chosen = check_lora_settings(model, rank=rank, alpha=alpha, layers=layers)
    adapted = nnx.clone(model)
    rngs = nnx.Rngs(seed)
    for target in chosen:
        parent, attr = _parent_and_name(adapted.layers[target.block], target.name)
        setattr(parent, attr, MaskedLoraLinear(getattr(parent, attr), rank=rank, alpha=alpha,
                                               rngs=rngs))
    return adapted


def merge_lora(adapted, base):
    """``base`` (the model ``add_lora`` adapted) with every adapted kernel replaced by its
    merged kernel: a plain model with the base's zeros."""
    merged = nnx.clone(base)
    for target in merged.prunable_linears():
        parent, attr = _parent_and_name(adapted.layers[target.block], target.name)
        layer = getattr(parent, attr)
        if isinstance(layer, MaskedLoraLinear):
            own, own_attr = _parent_and_name(merged.layers[target.block], target.name)
            getattr(own, own_attr).kernel[...] = layer.merged_kernel()
    return merged


def lora_recover(student, tokens: np.ndarray, settings: TrainSettings, *, teacher=None,
                 rank: int = 8, alpha: float = 16.0, layers: str = "",
                 temperature: float = 1.0, checkpoint_dir: str = "",
                 bos_id: int | None = None) -> tuple:
    """Recovers a pruned (or quantized) model with masked LoRA: distillation from ``teacher``
    (or next-token training without one), then the updates merged.

    Args:
      student: the pruned model (unchanged).
      tokens: the training text's token ids.
      settings: steps, batches, optimizer (the learning rate applies to ``A`` and ``B``).
      teacher: the dense model whose logits the student learns, or ``None``.
      rank, alpha, layers: as for ``add_lora`` (``settings.seed`` draws ``A``).
      temperature: the distillation temperature.
      checkpoint_dir: orbax checkpoints of the factors (resumed from if present); empty: none.
      bos_id: start every window with this token.

    Returns:
      ``(merged model, curve [(step, mean loss)])``; the model has ``student``'s zeros.

    References:
      Hu et al. 2022 (LoRA); Dettmers et al. 2023 (QLoRA).
    """
    adapted = add_lora(student, rank=rank, alpha=alpha, layers=layers, seed=settings.seed)
    trainer = Trainer(adapted, tokens, settings, teacher=teacher, temperature=temperature,
                      bos_id=bos_id, trainable=LoraParam)
    curve = train_with_checkpoints(trainer, checkpoint_dir)
    return merge_lora(trainer.model(), student), curve
