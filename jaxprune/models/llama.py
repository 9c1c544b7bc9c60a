"""A Flax NNX decoder for the Llama family: Llama 1-3, SmolLM2, Mistral, Qwen2 (q/k/v biases),
Qwen3 (q/k norms) and Gemma 3 (sandwich norms with a (1 + w) scale, GeGLU, scaled embeddings,
local blocks with their own RoPE base), each a setting of ``LlamaConfig``.

Parameter names follow Hugging Face (``layers/3/self_attn/q_proj/kernel``), with Flax layouts:
linear kernels are ``[in, out]``, the embedding is ``[vocab, hidden]``. The model exposes
``embed``, ``block`` and ``head`` separately so that calibration can run one block at a time::

  h = model.embed(tokens)
  for i in range(model.config.num_layers):
    h = model.block(i, h)
  logits = model.head(h)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.config import PER_BLOCK_FIELDS, LlamaConfig
from jaxprune.models.rope import rope_tables


class RMSNorm(nnx.Module):
    """Root-mean-square normalisation with a learned scale, computed in float32.

    Args:
      dim: width of the normalised axis.
      eps: added to the mean square.
      plus_one: scale by ``1 + w`` (Gemma, ``w`` zero at initialisation) instead of ``w``.
      param_dtype: dtype of ``w``.
    """

    def __init__(self, dim: int, eps: float, *, plus_one: bool = False,
                 param_dtype=jnp.float32):
        self.scale = nnx.Param((jnp.zeros if plus_one else jnp.ones)((dim,), param_dtype))
        self.eps = eps
        self.plus_one = plus_one

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        scale = self.scale[...].astype(jnp.float32)
        return (normed * (1.0 + scale if self.plus_one else scale)).astype(x.dtype)


def norm_for(config: LlamaConfig, dim: int, param_dtype) -> RMSNorm:
    """An RMSNorm of the config's kind (epsilon, ``1 + w`` scale) over ``dim`` channels."""
    return RMSNorm(dim, config.rms_norm_eps, plus_one=config.norm_plus_one,
                   param_dtype=param_dtype)


def visible_keys(behind: jax.Array, window: int | None) -> jax.Array:
    """Which keys a query may attend, from ``behind`` (query position minus key position): the
    earlier ones and itself, and for a windowed block only the ``window`` latest of them (the
    rule of ``Attention.window``, for callers that build their own masks)."""
    visible = behind >= 0
    return visible if window is None else visible & (behind < window)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates ``x`` of shape ``[batch, seq, heads, head_dim]`` (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


class Attention(nnx.Module):
    """Causal grouped-query self-attention with rotary position embeddings.

    ``cos`` and ``sin`` arrive as every RoPE table of the model stacked
    (``[tables, batch, seq, head_dim]``, ``Llama.rope_at``); the block rotates by its own
    (``config.rope_table``: Gemma 3's local blocks have another base)."""

    def __init__(self, config: LlamaConfig, layer: int, *, rngs: nnx.Rngs, param_dtype):
        h, d = config.hidden_size, config.head_dim
        self.num_heads = config.num_heads[layer]
        self.num_kv_heads = config.num_kv_heads[layer]
        self.head_dim = d
        self.window = config.attention_windows[layer]  # None: full causal attention
        self.rope_table = config.rope_table(layer)
        scalar = config.query_pre_attn_scalar
        self.scale = None if scalar is None else float(scalar) ** -0.5  # None: head_dim ** -0.5
        bias = config.attention_bias

        def linear(n_in, n_out, use_bias):
            return nnx.Linear(n_in, n_out, use_bias=use_bias, param_dtype=param_dtype, rngs=rngs)

        self.q_proj = linear(h, self.num_heads * d, bias)
        self.k_proj = linear(h, self.num_kv_heads * d, bias)
        self.v_proj = linear(h, self.num_kv_heads * d, bias)
        self.o_proj = linear(self.num_heads * d, h, False)
        # Qwen3, Gemma 3: one RMSNorm over each head's query (and key), shared by the heads.
        self.q_norm = norm_for(config, d, param_dtype) if config.qk_norm else None
        self.k_norm = norm_for(config, d, param_dtype) if config.qk_norm else None

    def project(self, x: jax.Array, cos: jax.Array,
                sin: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Queries, keys and values per head ``[batch, seq, heads, head_dim]``, the queries and
        keys normalised (Qwen3, Gemma 3) and rotated by this block's RoPE table."""
        batch, seq, _ = x.shape
        cos, sin = cos[self.rope_table], sin[self.rope_table]
        q = self.q_proj(x).reshape(batch, seq, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(batch, seq, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(batch, seq, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def heads(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
              mask: jax.Array | None = None) -> jax.Array:
        """Attention output of every head, concatenated: the input of ``o_proj``.

        ``mask`` (``[batch, 1, seq, seq]``, True where a query may attend a key) replaces the
        causal mask and the block's window (``self.window``), for sequences that pack several
        continuations of one prefix: the caller builds it for the window."""
        batch, seq, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        if mask is None:
            # A query at position i sees the keys at i - window + 1 .. i.
            local = None if self.window is None else (self.window - 1, 0)
            out = jax.nn.dot_product_attention(q, k, v, scale=self.scale, is_causal=True,
                                               local_window_size=local)
        else:
            out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=self.scale)
        return out.reshape(batch, seq, self.num_heads * self.head_dim)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
                 mask: jax.Array | None = None) -> jax.Array:
        return self.o_proj(self.heads(x, cos, sin, mask))


# The gate activations of ``config.ACTIVATIONS``; Gemma's ``gelu_pytorch_tanh`` is the tanh
# approximation of GELU.
_ACTIVATION_FNS = {"silu": jax.nn.silu, "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True)}


class MLP(nnx.Module):
    """Gated feed-forward: ``down(act(gate(x)) * up(x))``, SwiGLU (``silu``) or GeGLU."""

    def __init__(self, config: LlamaConfig, layer: int, *, rngs: nnx.Rngs, param_dtype):
        h, inter = config.hidden_size, config.intermediate_size[layer]

        def linear(n_in, n_out):
            return nnx.Linear(n_in, n_out, use_bias=False, param_dtype=param_dtype, rngs=rngs)

        self.gate_proj = linear(h, inter)
        self.up_proj = linear(h, inter)
        self.down_proj = linear(inter, h)
        self.hidden_act = config.hidden_act

    def hidden(self, x: jax.Array) -> jax.Array:
        """The gated activation ``act(gate(x)) * up(x)``: the input of ``down_proj``."""
        return _ACTIVATION_FNS[self.hidden_act](self.gate_proj(x)) * self.up_proj(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(self.hidden(x))


class PrunableLinear(NamedTuple):
    """A linear layer that pruning may touch: where it is and which input feeds it.

    Attributes:
      block: index of its block in ``model.layers``.
      name: its path inside the block (``mlp/up_proj``).
      group: the key of ``Block.forward_with_inputs`` holding its input; layers of one group
        share calibration statistics.
    """

    block: int
    name: str
    group: str

    @property
    def path(self) -> str:
        """The path of its kernel in the model's state (``layers/3/mlp/up_proj/kernel``)."""
        return f"layers/{self.block}/{self.name}/kernel"


# Which input (a key of Block.forward_with_inputs) feeds each linear layer of a block.
LINEAR_INPUTS = {
    "self_attn/q_proj": "attn",
    "self_attn/k_proj": "attn",
    "self_attn/v_proj": "attn",
    "self_attn/o_proj": "o",
    "mlp/gate_proj": "mlp",
    "mlp/up_proj": "mlp",
    "mlp/down_proj": "down",
}


class Block(nnx.Module):
    """One pre-norm decoder block: attention then MLP, each with a residual connection.

    Norm names follow Hugging Face, whose ``post_attention_layernorm`` means two things: in
    Llama it normalises the MLP's input; with ``sandwich_norms`` (Gemma) it normalises the
    attention's output, ``pre_feedforward_layernorm`` the MLP's input and
    ``post_feedforward_layernorm`` the MLP's output. ``add_attention``, ``mlp_input`` and
    ``add_mlp`` say which applies, for callers that run a block in pieces.
    """

    LINEAR_INPUTS = LINEAR_INPUTS

    def __init__(self, config: LlamaConfig, layer: int, *, rngs: nnx.Rngs, param_dtype):
        h = config.hidden_size
        self.input_layernorm = norm_for(config, h, param_dtype)
        self.self_attn = Attention(config, layer, rngs=rngs, param_dtype=param_dtype)
        self.post_attention_layernorm = norm_for(config, h, param_dtype)
        self.sandwich_norms = config.sandwich_norms
        if config.sandwich_norms:
            self.pre_feedforward_layernorm = norm_for(config, h, param_dtype)
            self.post_feedforward_layernorm = norm_for(config, h, param_dtype)
        self.mlp = MLP(config, layer, rngs=rngs, param_dtype=param_dtype)

    def add_attention(self, h: jax.Array, attended: jax.Array) -> jax.Array:
        """The residual stream ``h`` plus the attention's output (after ``o_proj``)."""
        return h + (self.post_attention_layernorm(attended) if self.sandwich_norms else attended)

    def mlp_input(self, h: jax.Array) -> jax.Array:
        """The normalised residual stream the MLP reads."""
        if self.sandwich_norms:
            return self.pre_feedforward_layernorm(h)
        return self.post_attention_layernorm(h)

    def add_mlp(self, h: jax.Array, out: jax.Array) -> jax.Array:
        """The residual stream ``h`` plus the MLP's output."""
        return h + (self.post_feedforward_layernorm(out) if self.sandwich_norms else out)

    def __call__(self, h: jax.Array, cos: jax.Array, sin: jax.Array,
                 mask: jax.Array | None = None) -> jax.Array:
        """The block's output; ``mask`` as ``Attention.heads`` takes it (None: causal)."""
        h = self.add_attention(h, self.self_attn(self.input_layernorm(h), cos, sin, mask))
        return self.add_mlp(h, self.mlp(self.mlp_input(h)))

    def forward_with_inputs(
        self, h: jax.Array, cos: jax.Array, sin: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Runs the block and also returns the input of every linear layer.

        Returns:
          ``(output, inputs)``; ``inputs`` maps ``LINEAR_INPUTS`` keys (``"attn"``: input of
          q, k and v; ``"o"``: of ``o_proj``; ``"mlp"``: of gate and up; ``"down"``: of
          ``down_proj``) to arrays ``[batch, seq, in]``.
        """
        x_attn = self.input_layernorm(h)
        heads = self.self_attn.heads(x_attn, cos, sin)
        h = self.add_attention(h, self.self_attn.o_proj(heads))
        x_mlp = self.mlp_input(h)
        hidden = self.mlp.hidden(x_mlp)
        h = self.add_mlp(h, self.mlp.down_proj(hidden))
        return h, {"attn": x_attn, "o": heads, "mlp": x_mlp, "down": hidden}


class Llama(nnx.Module):
    """Llama-family causal language model.

    Args:
      config: the model's shape (per-block widths allowed).
      rngs: initialisation randomness.
      param_dtype: dtype of every parameter (float32 by default; bfloat16 halves memory).
    """

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.config = config
        self.embed_tokens = nnx.Embed(
            config.vocab_size, config.hidden_size, param_dtype=param_dtype, rngs=rngs
        )
        self.layers = nnx.List([
            Block(config, i, rngs=rngs, param_dtype=param_dtype) for i in range(config.num_layers)
        ])
        self.norm = norm_for(config, config.hidden_size, param_dtype)
        if not config.tie_word_embeddings:
            self.lm_head = nnx.Linear(
                config.hidden_size, config.vocab_size, use_bias=False, param_dtype=param_dtype,
                rngs=rngs,
            )

    def prunable_linears(self) -> list[PrunableLinear]:
        """The linear layers of every block, in block order: what one-shot pruning, surgery and
        the sparse kernels may touch (never embeddings, norms or the head)."""
        return [PrunableLinear(i, name, group) for i, block in enumerate(self.layers)
                for name, group in type(block).LINEAR_INPUTS.items()]

    def embed(self, tokens: jax.Array) -> jax.Array:
        """Token ids ``[batch, seq]`` to the residual stream ``[batch, seq, hidden]`` (times
        ``sqrt(hidden_size)`` with ``scale_embeddings``, rounded to the embedding's dtype as
        Gemma does)."""
        h = self.embed_tokens(tokens)
        if self.config.scale_embeddings:
            h = h * jnp.asarray(self.config.hidden_size ** 0.5, h.dtype)
        return h

    def rope(self, seq_len: int, offset: int = 0) -> tuple[jax.Array, jax.Array]:
        """Rotary tables ``[tables, 1, seq, head_dim]`` for positions ``offset .. offset + seq
        - 1`` (see ``rope_at``)."""
        return self.rope_at(jnp.arange(offset, offset + seq_len)[None, :])

    def rope_at(self, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Every RoPE table of the model, stacked, ``[tables, batch, seq, head_dim]``, for
        explicit positions ``[batch, seq]``: the global table, then the local one (unscaled,
        base ``rope_local_theta``) if the config has it. Blocks pick theirs."""
        c = self.config
        tables = [rope_tables(positions, c.head_dim, c.rope_theta, c.rope_scaling,
                              c.max_position_embeddings)]
        if c.rope_local_theta is not None:
            tables.append(rope_tables(positions, c.head_dim, c.rope_local_theta, None,
                                      c.max_position_embeddings))
        cos, sin = zip(*tables, strict=True)
        return jnp.stack(cos), jnp.stack(sin)

    def block(self, index: int, h: jax.Array) -> jax.Array:
        """Runs decoder block ``index`` on the residual stream ``h`` (positions from 0)."""
        cos, sin = self.rope(h.shape[1])
        return self.layers[index](h, cos, sin)

    def head(self, h: jax.Array) -> jax.Array:
        """Final norm and LM head: residual stream to float32 logits ``[batch, seq, vocab]``."""
        h = self.norm(h)
        tied = self.config.tie_word_embeddings
        logits = self.embed_tokens.attend(h) if tied else self.lm_head(h)
        return logits.astype(jnp.float32)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Logits ``[batch, seq, vocab]`` for token ids ``[batch, seq]``."""
        h = self.embed(tokens)
        cos, sin = self.rope(tokens.shape[1])
        for layer in self.layers:
            h = layer(h, cos, sin)
        return self.head(h)


def abstract_llama(config: LlamaConfig, *, param_dtype=jnp.float32) -> Llama:
    """The model's structure with ``jax.ShapeDtypeStruct`` leaves, for filling in loaded weights.

    Equal (graph and leaves) to ``nnx.eval_shape`` of the whole constructor, but traced one
    block at a time: in one long trace every draw from ``nnx.Rngs`` costs time proportional to
    the trace's length so far (flax asks the traced counter for a ``sharding``, and JAX's error
    message for that walks the trace), so the whole trace grows with the square of the depth.
    SmolLM2 (30 blocks) on the 2-core machine: 1.58 s whole, 0.55 s by blocks. Each kind of
    block is traced once, and the result is kept per (config, dtype), so the surgeries that
    rebuild a model of the same shape trace nothing.

    Args:
      config: the model's shape.
      param_dtype: dtype of every parameter.

    Returns:
      An abstract ``Llama``: use it with ``nnx.split``; calling it computes nothing.
    """
    return nnx.merge(*abstract_split(config, param_dtype=param_dtype))


def abstract_split(config: LlamaConfig, *, param_dtype=jnp.float32) -> tuple:
    """``nnx.split(abstract_llama(config))`` without building the module: the kept graph and
    shape leaves, for callers that fill in weights (``model_from_hf_tensors``)."""
    return _abstract_split(config, jnp.dtype(param_dtype))


@functools.lru_cache(maxsize=64)
def _abstract_split(config: LlamaConfig, param_dtype) -> tuple:
    """``nnx.split`` of the abstract model (immutable parts: a graph and shape leaves)."""
    first = config.select_blocks([0])
    model = nnx.eval_shape(lambda: Llama(first, rngs=nnx.Rngs(0), param_dtype=param_dtype))
    # Blocks with the same per-block fields have the same structure: each kind is traced once
    # and copied (SmolLM2: 1 trace instead of 30).
    traced: dict[tuple, Block] = {}
    layers = []
    for i in range(config.num_layers):
        kind = tuple(getattr(config, name)[i] for name in PER_BLOCK_FIELDS)
        if kind not in traced:
            traced[kind] = nnx.eval_shape(
                lambda i=i: Block(config, i, rngs=nnx.Rngs(0), param_dtype=param_dtype))
        layers.append(nnx.clone(traced[kind]))
    model.layers = nnx.List(layers)
    model.config = config
    return nnx.split(model)
