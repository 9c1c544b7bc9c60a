"""The NNX decoder against transformers on the same random weights (tiny configs)."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune as jp
from jaxprune import models, oneshot, structured
from jaxprune.eval import perplexity
from tests import lazy
from tests.families import FAMILIES, tiny_model
from tests.test_oneshot import settings

torch = lazy.LazyModule("torch")
transformers = lazy.LazyModule("transformers")

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=5000.0,
            rms_norm_eps=1e-5, max_position_embeddings=128)


def reference_model(kind: str, tied: bool, seed: int = 0, **overrides):
    """A transformers model with random weights, norm scales and biases included; ``overrides``
    change fields of ``TINY``."""
    torch.manual_seed(seed)
    shape = {**TINY, **overrides}
    if kind == "qwen2":
        config = transformers.Qwen2Config(**shape, tie_word_embeddings=tied,
                                          use_sliding_window=False)
        model = transformers.Qwen2ForCausalLM(config)
    elif kind == "mistral":  # a window of 8 in every block, under 24-token inputs
        config = transformers.MistralConfig(**shape, tie_word_embeddings=tied, sliding_window=8)
        model = transformers.MistralForCausalLM(config)
    elif kind == "qwen2-window":  # block 0 full, block 1 a window of 8
        config = transformers.Qwen2Config(**shape, tie_word_embeddings=tied,
                                          use_sliding_window=True, sliding_window=8,
                                          max_window_layers=1)
        model = transformers.Qwen2ForCausalLM(config)
    elif kind in ("qwen3", "qwen3-window"):  # qwen3-window: block 1 a window of 8
        windowed = kind == "qwen3-window"
        config = transformers.Qwen3Config(**shape, tie_word_embeddings=tied,
                                          use_sliding_window=windowed,
                                          sliding_window=8 if windowed else None,
                                          max_window_layers=1)
        model = transformers.Qwen3ForCausalLM(config)
    elif kind == "gemma3":  # block 0 a window of 8 with its own RoPE base, block 1 full
        config = transformers.Gemma3TextConfig(
            **shape, tie_word_embeddings=tied, sliding_window=8,
            layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=24,
            rope_local_base_freq=300.0, rope_scaling={"rope_type": "linear", "factor": 2.0})
        model = transformers.Gemma3ForCausalLM(config)
    elif kind == "gemma3-gguf":  # what a Gemma 3 GGUF can say: llama.cpp's fixed choices
        config = transformers.Gemma3TextConfig(
            **{**shape, "head_dim": 256}, tie_word_embeddings=tied, sliding_window=8,
            query_pre_attn_scalar=256, rope_local_base_freq=10000.0)
        model = transformers.Gemma3ForCausalLM(config)
    else:
        config = transformers.LlamaConfig(**shape, tie_word_embeddings=tied)
        model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
    return model.eval()


def reference_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()


def assert_close_relative(ours, reference, tol):
    """max |ours - reference| <= tol * max |reference| (relative to the logits' scale)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    scale = np.max(np.abs(reference))
    np.testing.assert_allclose(ours, reference, rtol=tol, atol=tol * scale)


def tokens_for(seed=1, batch=2, seq=24):
    return np.random.default_rng(seed).integers(0, TINY["vocab_size"], (batch, seq))


@pytest.mark.parametrize("kind, tied", [("llama", False), ("llama", True), ("qwen2", False),
                                        ("qwen3", True), ("mistral", False),
                                        ("qwen2-window", True), ("qwen3-window", False),
                                        ("gemma3", True)])
def test_logits_match_transformers_through_a_saved_checkpoint(tmp_path, kind, tied):
    reference = reference_model(kind, tied)
    reference.save_pretrained(tmp_path / "ref")
    model, _ = models.load(str(tmp_path / "ref"))
    assert model.config.num_kv_heads == (2, 2) and model.config.tie_word_embeddings == tied
    assert model.config.attention_bias == kind.startswith("qwen2")
    assert model.config.qk_norm == (kind in ("qwen3", "qwen3-window", "gemma3"))
    assert model.config.sandwich_norms == model.config.norm_plus_one == (kind == "gemma3")
    windows = {"mistral": (8, 8), "qwen2-window": (None, 8), "qwen3-window": (None, 8),
               "gemma3": (8, None)}.get(kind, (None, None))
    assert model.config.attention_windows == windows
    tokens = tokens_for()
    assert_close_relative(model(jnp.asarray(tokens)), reference_logits(reference, tokens), 1e-4)


@pytest.mark.parametrize("kind, tied", [("llama", True), ("qwen2", False), ("qwen3", False),
                                        ("mistral", True), ("qwen2-window", False),
                                        ("gemma3", True)])
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, kind, tied):
    reference = reference_model(kind, tied, seed=3)
    reference.save_pretrained(tmp_path / "ref")
    model, _ = models.load(str(tmp_path / "ref"))
    models.save_hf_dir(model, str(tmp_path / "export"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(reloaded) is type(reference)  # the same family
    tokens = tokens_for(seed=4)
    ours = np.asarray(model(jnp.asarray(tokens)))
    assert_close_relative(reference_logits(reloaded, tokens), ours, 1e-5)
    # Nothing else is left beside the export (it is written atomically).
    assert sorted(os.listdir(tmp_path)) == ["export", "ref"]


def test_a_bfloat16_checkpoint_loads_and_exports_in_bfloat16(tmp_path):
    """Hub checkpoints are mostly bfloat16: loaded as bfloat16 parameters bit for bit, run
    close to transformers' float32 run of the same weights, exported as bfloat16 again."""
    from safetensors.torch import load_file

    reference = reference_model("llama", False, seed=5).to(torch.bfloat16)
    reference.save_pretrained(tmp_path / "ref")
    model, _ = models.load(str(tmp_path / "ref"), param_dtype=jnp.bfloat16)
    models.save_hf_dir(model, str(tmp_path / "export"))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    stored = load_file(tmp_path / "ref" / "model.safetensors")
    exported = load_file(tmp_path / "export" / "model.safetensors")
    assert {t.dtype for t in exported.values()} == {torch.bfloat16}
    assert sorted(exported) == sorted(stored)
    for name, tensor in stored.items():
        assert torch.equal(exported[name], tensor), name
    tokens = tokens_for(seed=6)
    want = reference_logits(reference.float(), tokens)
    assert_close_relative(model(jnp.asarray(tokens)), want, 3e-2)  # bfloat16 activations


def test_a_sharded_checkpoint_loads_and_a_missing_shard_is_named(tmp_path):
    reference = reference_model("llama", True, seed=7)
    reference.save_pretrained(tmp_path / "ref", max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "ref").glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "ref" / "model.safetensors.index.json").is_file()
    model, _ = models.load(str(tmp_path / "ref"))
    tokens = tokens_for(seed=8)
    assert_close_relative(model(jnp.asarray(tokens)), reference_logits(reference, tokens), 1e-4)
    (tmp_path / "ref" / shards[1]).unlink()
    with pytest.raises(FileNotFoundError, match=f"1 of them missing: \\['{shards[1]}'\\]"):
        models.load(str(tmp_path / "ref"))


# Context-extension schemes, each with an original context (16) shorter than the test sequences
# (40 tokens), so the scaled frequencies matter.
ROPE_SCALINGS = {
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    "linear": {"rope_type": "linear", "factor": 2.5},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "yarn-mscale": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16,
                    "beta_fast": 16.0, "beta_slow": 2.0, "mscale": 0.8, "mscale_all_dim": 0.5,
                    "truncate": False},
}


def scaled_reference(name: str, seed: int = 7):
    """A Llama 3.2-style tiny model (tied embeddings, theta 500000) with a RoPE scheme."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(**{**TINY, "rope_theta": 500000.0},
                                      rope_scaling=dict(ROPE_SCALINGS[name]),
                                      tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("norm.weight"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
    return model.eval()


@pytest.mark.parametrize("name", sorted(ROPE_SCALINGS))
def test_scaled_rope_models_match_transformers_through_load_and_export(tmp_path, name):
    """The frequencies and YaRN's attention factor against transformers' ROPE_INIT_FUNCTIONS,
    then the logits of the saved model, and of jaxprune's export loaded back by transformers."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    reference = scaled_reference(name)
    reference.save_pretrained(tmp_path / "ref")
    model, _ = models.load(str(tmp_path / "ref"))
    config = model.config
    assert config.rope_scaling.rope_type == ROPE_SCALINGS[name]["rope_type"]
    inv_freq, factor = ROPE_INIT_FUNCTIONS[config.rope_scaling.rope_type](reference.config)
    ours, our_factor = models.inverse_frequencies(config.head_dim, config.rope_theta,
                                                  config.rope_scaling,
                                                  config.max_position_embeddings)
    np.testing.assert_allclose(np.asarray(ours), inv_freq.numpy(), rtol=1e-6)
    assert our_factor == pytest.approx(factor, rel=1e-12)
    unscaled, _ = models.inverse_frequencies(config.head_dim, config.rope_theta)
    assert not np.allclose(np.asarray(ours), np.asarray(unscaled))  # the scheme changes them
    tokens = tokens_for(seed=8, seq=40)
    logits = np.asarray(model(jnp.asarray(tokens)))
    assert_close_relative(logits, reference_logits(reference, tokens), 1e-4)
    models.save_hf_dir(model, str(tmp_path / "export"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert reloaded.config.rope_parameters["rope_type"] == ROPE_SCALINGS[name]["rope_type"]
    assert_close_relative(reference_logits(reloaded, tokens), logits, 1e-5)


def test_block_by_block_equals_the_full_forward_and_jit():
    reference = reference_model("llama", tied=False)
    tensors = {k: v.numpy() for k, v in reference.state_dict().items()}
    config = models.config_from_hf_dict(reference.config.to_dict())
    model = models.model_from_hf_tensors(config, tensors)
    tokens = jnp.asarray(tokens_for())
    h = model.embed(tokens)
    for i in range(config.num_layers):
        h = model.block(i, h)
    by_block = model.head(h)
    full = model(tokens)
    np.testing.assert_allclose(by_block, full, rtol=1e-6, atol=1e-6)
    jitted = nnx.jit(lambda m, t: m(t))(model, tokens)
    np.testing.assert_allclose(jitted, full, rtol=1e-5, atol=1e-5)


def test_perplexity_matches_transformers_loss(tmp_path):
    reference = reference_model("llama", tied=True, seed=5)
    reference.save_pretrained(tmp_path / "ref")
    model, _ = models.load(str(tmp_path / "ref"))
    stream = np.random.default_rng(6).integers(0, TINY["vocab_size"], 5 * 16 + 7)
    result = perplexity(model, stream, window=16, batch_size=2, progress=False)
    windows = torch.as_tensor(stream[: 5 * 16].reshape(5, 16), dtype=torch.long)
    with torch.no_grad():
        # Each window's mean loss over its 15 predictions; windows weigh equally.
        losses = [reference(w[None], labels=w[None]).loss.item() for w in windows]
    assert result.num_windows == 5 and result.num_predicted == 5 * 15
    assert result.perplexity == pytest.approx(float(np.exp(np.mean(losses))), rel=1e-5)


def test_parameter_count_formula_matches_transformers():
    for kind, tied in [("llama", False), ("llama", True), ("qwen2", False), ("qwen3", True)]:
        reference = reference_model(kind, tied)
        config = models.config_from_hf_dict(reference.config.to_dict())
        assert config.num_params() == reference.num_parameters()


# Bad input: clear errors naming the problem.


def test_missing_checkpoint_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a known model"):
        models.load(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        models.load_hf_dir(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt2"}, "model_type is 'gpt2'"),
        ({"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}},
         r"rope_scaling has rope_type 'dynamic'; supported: \['default', 'linear'"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0, "low_freq_factor": 1.0}},
         r"rope_scaling \(linear\) has fields .* not implement: \['low_freq_factor'\]"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
         "rope_scaling.low_freq_factor is required for rope_type 'llama3'"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 0.0}},
         r"rope_scaling.factor must be > 0, got 0.0"),
        ({"attention_bias": True}, "output-projection bias"),
        ({"sliding_window": 8}, "sliding_window is 8 for model_type 'llama'"),
        ({"model_type": "qwen3", "attention_bias": True},
         "qwen3's attention bias includes an output-projection bias"),
        ({"parallel_residual": True}, r"does not implement: \['parallel_residual'\]"),
        ({"model_type": "gemma3"}, "loads the text model alone: model_type 'gemma3_text'"),
        ({"model_type": "gemma3_text", "final_logit_softcapping": 30.0},
         "final_logit_softcapping is 30.0; soft-capping"),
        ({"model_type": "gemma3_text", "hidden_activation": "relu"},
         "hidden_activation is 'relu'; Gemma 3 supports only 'gelu_pytorch_tanh'"),
        ({"model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh",
          "layer_types": ["sliding_attention", "chunked"]},
         "layer_types must name sliding_attention or full_attention"),
        ({"model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh",
          "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}},
         "Gemma 3's local RoPE is unscaled"),
    ],
)
def test_config_with_unsupported_fields_is_refused(tmp_path, change, message):
    reference = reference_model("llama", tied=True)
    reference.save_pretrained(tmp_path / "ref")
    path = tmp_path / "ref" / "config.json"
    raw = json.loads(path.read_text()) | change
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        models.load(str(tmp_path / "ref"))


def test_export_of_non_uniform_widths_is_refused(tmp_path):
    config = models.LlamaConfig(vocab_size=32, hidden_size=16, num_layers=2, num_heads=(4, 2),
                                num_kv_heads=(2, 1), intermediate_size=(24, 8), head_dim=4)
    model = models.Llama(config, rngs=nnx.Rngs(0))
    assert model(jnp.zeros((1, 5), jnp.int32)).shape == (1, 5, 32)
    with pytest.raises(ValueError, match="same widths in every block"):
        models.save_hf_dir(model, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # transformers derives head_dim from hidden / heads, so a hidden size that is not a multiple
    # of the head count (after a hidden cut) is refused too.
    odd = models.Llama(models.LlamaConfig(vocab_size=32, hidden_size=18, num_layers=1,
                                          num_heads=4, num_kv_heads=2, intermediate_size=8,
                                          head_dim=4), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"hidden_size \(18\) to be a multiple of the number "
                                         r"of attention heads \(4\)"):
        models.save_hf_dir(odd, str(tmp_path / "odd"))
    assert not (tmp_path / "odd").exists()


# llama.cpp's names for the tensors of a block, from Hugging Face's.
GGUF_BLOCK = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
              "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter's q/k row order for the llama architecture (pairs interleaved)."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


# Gemma's norms: llama.cpp's names, and its converter stores each weight as 1 + w.
GEMMA_GGUF_BLOCK = {**GGUF_BLOCK, "post_attention_layernorm": "post_attention_norm",
                    "pre_feedforward_layernorm": "ffn_norm",
                    "post_feedforward_layernorm": "post_ffw_norm"}


def write_gguf(reference, arch: str, path) -> None:
    """A float32 GGUF of ``reference`` as llama.cpp's converter lays it out (without a
    vocabulary): its metadata keys, tensor names and, for llama, the permuted q/k rows; for
    gemma3 the norms stored as 1 + w."""
    import gguf

    config = reference.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = config.rope_parameters  # Gemma 3: one entry per layer type; the file has the global
    writer.add_rope_freq_base(rope.get("full_attention", rope)["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    if arch in ("qwen3", "gemma3"):  # llama.cpp states the head width (not hidden / heads)
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
    if arch == "gemma3":
        writer.add_sliding_window(config.sliding_window)
    names = GEMMA_GGUF_BLOCK if arch == "gemma3" else GGUF_BLOCK
    for name, tensor in reference.state_dict().items():
        array = tensor.numpy().astype(np.float32)
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        if arch == "gemma3" and name.endswith("norm.weight"):
            array = array + 1.0
        if name.startswith("model.layers."):
            layer, rest = name[len("model.layers."):].split(".", 1)
            module, suffix = rest.rsplit(".", 1)
            if arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                heads = (config.num_attention_heads if module.endswith("q_proj")
                         else config.num_key_value_heads)
                array = llama_cpp_permute(array, heads)
            name = f"blk.{layer}.{names[module]}.{suffix}"
        else:
            name = {"model.embed_tokens.weight": "token_embd.weight",
                    "model.norm.weight": "output_norm.weight",
                    "lm_head.weight": "output.weight"}[name]
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch, kind, tied", [("llama", "llama", False),
                                              ("qwen2", "qwen2", True),
                                              ("qwen3", "qwen3", False),
                                              ("gemma3", "gemma3-gguf", True)])
def test_gguf_of_each_architecture_loads_as_transformers_reads_it(tmp_path, arch, kind, tied):
    """transformers' own GGUF reader is the independent reference for names, row order and
    metadata; the original model checks that the file says what it should."""
    # transformers' Qwen3 reader ignores the stated head width and takes Qwen3's 128.
    reference = reference_model(kind, tied, seed=11, **({"head_dim": 128} if arch == "qwen3"
                                                         else {}))
    write_gguf(reference, arch, tmp_path / "model.gguf")
    model, tokenizer = models.load(str(tmp_path / "model.gguf"))
    assert tokenizer is None and model.config.qk_norm == (arch in ("qwen3", "gemma3"))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="model.gguf", dtype=torch.float32).eval()
    tokens = tokens_for(seed=12)
    ours = np.asarray(model(jnp.asarray(tokens)))
    assert_close_relative(ours, reference_logits(theirs, tokens), 1e-4)
    assert_close_relative(ours, reference_logits(reference, tokens), 1e-4)


HUB_LOAD = """
import sys
import numpy as np
from jaxprune import models
model, _ = models.load("jaxprune-tests/tiny-qwen3")
np.save(sys.argv[1], np.asarray(model(np.asarray(sys.argv[2].split(","), np.int32)[None])))
try:
    models.load("jaxprune-tests/absent")
except FileNotFoundError as err:
    print(err)
"""


def test_a_hub_id_loads_from_the_local_cache_with_the_network_disabled(tmp_path):
    """The cache laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>), read
    in a process started with HF_HOME and HF_HUB_OFFLINE=1, as a user on an offline machine."""
    reference = reference_model("qwen3", tied=True, seed=9)
    repo = tmp_path / "hf" / "hub" / "models--jaxprune-tests--tiny-qwen3"
    commit = "0123456789abcdef0123456789abcdef01234567"
    reference.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    tokens = tokens_for(seed=10)[0]
    out = subprocess.run(
        [sys.executable, "-c", HUB_LOAD, str(tmp_path / "logits.npy"),
         ",".join(map(str, tokens))], capture_output=True, text=True, check=False,
        env=dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1",
                 JAX_PLATFORMS="cpu"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert_close_relative(np.load(tmp_path / "logits.npy"),
                          reference_logits(reference, tokens[None]), 1e-4)
    assert "'jaxprune-tests/absent' is not a local path" in out.stdout
    assert "not in the local Hugging Face cache" in out.stdout and "HF_HUB_OFFLINE" in out.stdout
    assert str(tmp_path / "hf" / "hub") in out.stdout


def test_export_refuses_attention_no_family_has():
    config = models.LlamaConfig(vocab_size=32, hidden_size=16, num_layers=2, num_heads=4,
                                num_kv_heads=2, intermediate_size=24, head_dim=4)
    cases = [({"attention_windows": (4, None)}, "mixes windowed and full blocks"),
             ({"attention_windows": (4, 6), "attention_bias": True},
              "one sliding-window size"),
             ({"qk_norm": True, "attention_bias": True}, "q/k norms with q/k/v biases")]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message):
            config.replace(**changes).to_hf_dict()
    assert config.replace(attention_windows=4).hf_model_type() == "mistral"
    assert config.replace(attention_windows=(None, 4), qk_norm=True).hf_model_type() == "qwen3"
    with pytest.raises(ValueError, match="attention_windows has 3 entries, but num_layers is 2"):
        config.replace(attention_windows=(1, 2, 3))
    # A depth cut keeps each kept block's own window (and widths).
    kept = config.replace(attention_windows=(4, None), num_heads=(4, 2)).select_blocks([1])
    assert kept.attention_windows == (None,) and kept.num_heads == (2,)


@pytest.mark.parametrize("tied, bias", [(True, False), (False, True)])
def test_abstract_model_built_by_blocks_equals_the_whole_constructor_traced(tied, bias):
    import jax

    config = models.LlamaConfig(vocab_size=50, hidden_size=24, num_layers=3, num_heads=(4, 2, 6),
                                num_kv_heads=(2, 1, 3), intermediate_size=(40, 24, 8), head_dim=8,
                                tie_word_embeddings=tied, attention_bias=bias)
    whole = nnx.split(nnx.eval_shape(
        lambda: models.Llama(config, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16)))
    by_blocks = nnx.split(models.abstract_llama(config, param_dtype=jnp.bfloat16))
    assert by_blocks[0] == whole[0]
    shapes = [jax.tree_util.tree_leaves_with_path(state) for _, state in (whole, by_blocks)]
    # Per block 2 norms and 7 kernels (and 3 biases); the embedding, the final norm, the head.
    assert len(shapes[1]) == (3 * 9 + 2 if tied else 3 * 12 + 3)
    for (path, leaf), (other_path, other) in zip(*shapes, strict=True):
        assert path == other_path and (leaf.shape, leaf.dtype) == (other.shape, other.dtype)
    assert by_blocks[1]["layers"][2]["mlp"]["up_proj"]["kernel"].shape == (24, 8)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_cut_then_2_4_pruned_export_keeps_zeros_and_shapes_in_transformers(tmp_path, family):
    """Each family, cut (one KV group of two per block, 24 of 48 MLP channels) and then pruned
    to 2:4, exported and read by transformers: its own class, the same logits, every zero still
    zero, the cut shapes in its config."""
    model = tiny_model(family)
    cut = structured.prune_width(model, kv_groups={0: [1], 1: [0]},
                                 mlp_channels={b: list(range(0, 48, 2)) for b in range(2)})
    segments = np.random.default_rng(0).integers(0, 64, (4, 12))
    config = settings(method="wanda", pattern="2:4", sparsity=0.5, batch_size=2)
    net = oneshot.prune_oneshot(cut, segments, config, progress=False).model
    models.save_hf_dir(net, str(tmp_path / "hf"))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == net.config.to_hf_dict()["architectures"][0]
    assert theirs.config.num_key_value_heads == 1 and theirs.config.intermediate_size == 24
    tokens = np.random.default_rng(2).integers(0, 64, (2, 14))
    with torch.no_grad():
        logits = theirs(torch.as_tensor(tokens)).logits.numpy()
    ours = np.asarray(net(jnp.asarray(tokens)))
    np.testing.assert_allclose(logits, ours, rtol=1e-5, atol=1e-5 * np.abs(ours).max())
    state = dict(jp.paths.leaves_with_paths(nnx.state(net, nnx.Param)))
    kernels = [key for key in theirs.state_dict() if key.endswith("proj.weight")]
    assert len(kernels) == 14
    for key in kernels:
        weight = theirs.state_dict()[key].numpy()
        path = key.replace("model.", "", 1).replace(".", "/").replace("weight", "kernel")
        np.testing.assert_array_equal(weight == 0, np.asarray(state[path]).T == 0)
        assert np.mean(weight == 0) == 0.5, key
