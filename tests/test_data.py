"""Text sources, cached tokenization, calibration sampling and evaluation windows."""

import os

import numpy as np
import pytest
import tokenizers
from tokenizers import models as tok_models
from tokenizers import pre_tokenizers

from jaxprune import data
from jaxprune.eval import evaluation_windows
from jaxprune.models import Tokenizer


def word_tokenizer(extra_word: str = "") -> Tokenizer:
    words = ["[UNK]", "the", "cat", "sat", "on", "mat", "."] + ([extra_word] if extra_word else [])
    backend = tokenizers.Tokenizer(
        tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return Tokenizer(backend)


def test_pydoc_splits_are_deterministic_and_disjoint():
    test, train = data.load_text("pydoc", split="test"), data.load_text("pydoc", split="train")
    assert test == data.pydoc_topics_text("test") and len(test) > 50_000
    assert len(train) > 3 * len(test)
    assert test[:200] not in train
    with pytest.raises(ValueError, match="split of source 'pydoc' must be 'train' or 'test'"):
        data.load_text("pydoc", split="valid")


def test_wikitext2_directory(tmp_path):
    (tmp_path / "wiki.test.raw").write_text(" = Title = \n text line\n", encoding="utf-8")
    assert data.load_text("wikitext2", path=str(tmp_path)) == " = Title = \n text line\n"
    with pytest.raises(FileNotFoundError, match=r"split 'train' not found.*wiki.test.raw"):
        data.load_text("wikitext2", path=str(tmp_path), split="train")
    with pytest.raises(ValueError, match="source 'wikitext2' needs a path"):
        data.load_text("wikitext2")


def test_unknown_source_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="text source must be one of"):
        data.load_text("c4")
    with pytest.raises(FileNotFoundError, match="text file not found"):
        data.load_text("file", path=str(tmp_path / "none.txt"))


def test_tokenize_cached_reuses_the_file_and_keys_on_the_tokenizer(tmp_path):
    text = "the cat sat on the mat . the cat"
    first = data.tokenize_cached(text, word_tokenizer(), cache_dir=str(tmp_path))
    assert first.tolist() == [1, 2, 3, 4, 1, 5, 6, 1, 2]
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].endswith(".npy")
    # A cache hit returns the stored ids (the file is what is read).
    np.save(tmp_path / files[0], np.array([9, 9], np.int32))
    assert data.tokenize_cached(text, word_tokenizer(), cache_dir=str(tmp_path)).tolist() == [9, 9]
    # Another tokenizer or another text gets its own entry.
    data.tokenize_cached(text, word_tokenizer("dog"), cache_dir=str(tmp_path))
    data.tokenize_cached(text + " .", word_tokenizer(), cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 3
    assert data.tokenize_cached(text, word_tokenizer(), use_cache=False).tolist() == first.tolist()


def test_calibration_segments_contiguous_and_random():
    stream = np.arange(1, 1001, dtype=np.int32)
    contiguous = data.calibration_segments(stream, 4, 100, contiguous=True)
    np.testing.assert_array_equal(contiguous, stream[:400].reshape(4, 100))
    a = data.calibration_segments(stream, 8, 50, seed=1)
    b = data.calibration_segments(stream, 8, 50, seed=1)
    c = data.calibration_segments(stream, 8, 50, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (8, 50) and a.dtype == np.int32
    # Every segment is a run of consecutive tokens from the stream.
    assert np.all(np.diff(a, axis=1) == 1)


def test_calibration_text_too_short_or_bad_sizes():
    stream = np.arange(300)
    with pytest.raises(ValueError, match="has 300 tokens; 4 contiguous segments of 100 need 400"):
        data.calibration_segments(stream, 4, 100, contiguous=True)
    with pytest.raises(ValueError, match="segments of 512 need 512"):
        data.calibration_segments(stream, 2, 512)
    with pytest.raises(ValueError, match="num_segments must be a positive integer"):
        data.calibration_segments(stream, 0, 10)


def test_evaluation_windows_drop_the_remainder_and_refuse_short_text():
    windows = evaluation_windows(np.arange(1, 1100), 512)
    assert windows.shape == (2, 512) and windows[1, 0] == 513
    assert evaluation_windows(np.arange(5000), 512, max_windows=3).shape == (3, 512)
    with pytest.raises(ValueError, match="has 300 tokens, fewer than one window of 512"):
        evaluation_windows(np.arange(300), 512)
    with pytest.raises(ValueError, match="window must be an integer >= 2"):
        evaluation_windows(np.arange(300), 1)


def test_hf_source_joins_rows_of_a_cached_dataset(monkeypatch):
    """The 'hf' source, with a stand-in for the datasets package (no hub here)."""
    import sys
    import types

    calls = []

    def load_dataset(name, subset, split):
        calls.append((name, subset, split))
        return {"text": [" = Title = ", " first line", ""]}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    text = data.load_text("hf", path="wikitext:wikitext-2-raw-v1", split="test")
    assert text == " = Title = \n\n first line\n\n"
    assert calls == [("wikitext", "wikitext-2-raw-v1", "test")]

    def missing(name, subset, split):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=missing))
    with pytest.raises(FileNotFoundError, match="must be in the local cache"):
        data.load_text("hf", path="c4", split="validation")
