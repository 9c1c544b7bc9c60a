"""Tokenizers: a thin wrapper over the ``tokenizers`` library, built from GGUF or tokenizer.json.

A GGUF file carries the vocabulary, the merges, the token types and the name of its
pre-tokenizer (``tokenizer.ggml.pre``); llama.cpp defines what each name means. The table
``GGUF_PRE_TOKENIZERS`` rebuilds those definitions with ``tokenizers`` components for byte-level
BPE (``tokenizer.ggml.model`` ``gpt2``). Gemma's SentencePiece BPE (``llama``) stores no merges:
``sentencepiece_merges`` derives them from the vocabulary's order.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence

import numpy as np


def _tokenizers():
    """The ``tokenizers`` package (the ``models`` extra), imported when first needed, so that
    the model code itself (``jaxprune.models.Llama``) works without it."""
    try:
        return importlib.import_module("tokenizers")
    except ImportError:
        raise ImportError("jaxprune's tokenizers need the 'tokenizers' package: "
                          "pip install 'jaxprune[models]'") from None

# llama.cpp token types (gguf.TokenType): 3 is CONTROL, 4 USER_DEFINED: never split.
_SPECIAL_TOKEN_TYPES = (3, 4)
_CONTROL, _USER_DEFINED = 3, 4
# SentencePiece's spelling of a space.
_SPM_SPACE = "\u2581"
# Architectures whose SentencePiece vocabulary is Gemma's: no space prefix, spaces spelled "▁"
# by the normaliser, merge order given by the vocabulary's order (not its scores).
GEMMA_SENTENCEPIECE_ARCHITECTURES = ("gemma", "gemma2", "gemma3")


def _gpt2_byte_level():
    return _tokenizers().pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


# llama.cpp's pre-tokenizer regexes for byte-level BPE vocabularies, by tokenizer.ggml.pre.
# "smollm" (like "starcoder" and "refact") first isolates every digit (\p{N}), then applies the
# GPT-2 regex; "gpt2" is the GPT-2 regex alone.
GGUF_PRE_TOKENIZERS = {
    "gpt2": lambda: _gpt2_byte_level(),
    "smollm": lambda: _tokenizers().pre_tokenizers.Sequence(
        [_tokenizers().pre_tokenizers.Digits(individual_digits=True), _gpt2_byte_level()]
    ),
    "starcoder": lambda: _tokenizers().pre_tokenizers.Sequence(
        [_tokenizers().pre_tokenizers.Digits(individual_digits=True), _gpt2_byte_level()]
    ),
}


class Tokenizer:
    """Text to token ids and back.

    Args:
      backend: a ``tokenizers.Tokenizer``.
      bos_id: the beginning-of-sequence id, or ``None``.
      eos_id: the end-of-sequence id, or ``None``.
      add_bos: whether the model expects every sequence to start with ``bos_id`` (GGUF's
        ``tokenizer.ggml.add_bos_token``; Gemma does, SmolLM2 does not).
    """

    def __init__(self, backend, *, bos_id: int | None = None,
                 eos_id: int | None = None, add_bos: bool = False):
        if add_bos and bos_id is None:
            raise ValueError("add_bos=True needs a bos_id")
        self.backend = backend
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = add_bos

    @property
    def sequence_start(self) -> int | None:
        """The token every sequence starts with (``bos_id`` when ``add_bos``), else ``None``:
        what evaluation windows and calibration segments put first."""
        return self.bos_id if self.add_bos else None

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_bos: bool = False) -> np.ndarray:
        """Token ids of ``text`` as int32, with the BOS id first when ``add_bos``."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_bos:
            if self.bos_id is None:
                raise ValueError("add_bos=True, but this tokenizer has no BOS token")
            ids = [self.bos_id, *ids]
        return np.asarray(ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of several texts, encoded in parallel by the backend."""
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``; special tokens are written out, so decoding inverts encoding."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def fingerprint(self) -> str:
        """SHA-256 of the tokenizer's full JSON definition (a cache key for tokenized text)."""
        return hashlib.sha256(self.backend.to_str().encode()).hexdigest()

    def save(self, path: str) -> None:
        """Writes ``tokenizer.json``."""
        self.backend.save(path)

    @classmethod
    def from_file(cls, path: str, *, bos_id: int | None = None,
                  eos_id: int | None = None, add_bos: bool = False) -> Tokenizer:
        """Loads a Hugging Face ``tokenizer.json``."""
        return cls(_tokenizers().Tokenizer.from_file(path), bos_id=bos_id, eos_id=eos_id,
                   add_bos=add_bos)


def tokenizer_from_gguf_fields(
    *,
    model: str,
    pre: str,
    tokens: Sequence[str],
    token_types: Sequence[int],
    merges: Sequence[str] | None,
    bos_id: int | None,
    eos_id: int | None,
    architecture: str = "llama",
    add_bos: bool = False,
) -> Tokenizer:
    """Rebuilds a tokenizer from the ``tokenizer.ggml.*`` fields of a GGUF.

    Args:
      model: ``tokenizer.ggml.model``: ``"gpt2"`` (byte-level BPE) or ``"llama"``
        (SentencePiece BPE, for the ``GEMMA_SENTENCEPIECE_ARCHITECTURES``).
      pre: ``tokenizer.ggml.pre``, a key of ``GGUF_PRE_TOKENIZERS`` (byte-level BPE only).
      tokens: the vocabulary, by id.
      token_types: llama.cpp token type per id (3 control and 4 user-defined are special).
      merges: BPE merges as ``"left right"`` strings, by priority (byte-level BPE).
      bos_id: BOS token id.
      eos_id: EOS token id.
      architecture: ``general.architecture``, which says how a SentencePiece vocabulary reads.
      add_bos: ``tokenizer.ggml.add_bos_token``.

    Returns:
      The tokenizer.

    Raises:
      ValueError: for another tokenizer model, a SentencePiece vocabulary of another
        architecture, or an unknown pre-tokenizer name.
    """
    if model == "llama" and architecture in GEMMA_SENTENCEPIECE_ARCHITECTURES:
        return gemma_tokenizer(tokens, token_types, bos_id=bos_id, eos_id=eos_id,
                               add_bos=add_bos)
    if model != "gpt2":
        raise ValueError(f"GGUF tokenizer.ggml.model is {model!r} for architecture "
                         f"{architecture!r}; supported: byte-level BPE ('gpt2'), and "
                         f"SentencePiece ('llama') for {list(GEMMA_SENTENCEPIECE_ARCHITECTURES)}")
    if pre not in GGUF_PRE_TOKENIZERS:
        raise ValueError(f"GGUF tokenizer.ggml.pre is {pre!r}; supported: "
                         f"{sorted(GGUF_PRE_TOKENIZERS)}")
    tk = _tokenizers()
    vocab = {token: i for i, token in enumerate(tokens)}
    # gguf's writer leaves an empty merges array out: a vocabulary of bytes alone has none.
    pairs = [tuple(merge.split(" ", 1)) for merge in merges or ()]
    backend = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    backend.pre_tokenizer = GGUF_PRE_TOKENIZERS[pre]()
    backend.decoder = tk.decoders.ByteLevel()
    special = [
        tk.AddedToken(tokens[i], special=True, normalized=False)
        for i, kind in enumerate(token_types) if kind in _SPECIAL_TOKEN_TYPES
    ]
    backend.add_special_tokens(special)
    return Tokenizer(backend, bos_id=bos_id, eos_id=eos_id, add_bos=add_bos)


def sentencepiece_merges(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """The BPE merges a SentencePiece vocabulary implies, best first.

    A merge joins two vocabulary pieces into a third; the merges producing an earlier token of
    the vocabulary come first (Gemma's vocabulary is in merge order; its scores are not), and
    among the merges producing one token, the one with the longer left piece.

    Args:
      tokens: the vocabulary, by id, spaces spelled ``"▁"``.

    Returns:
      ``(left, right)`` pairs by priority.
    """
    ids = {token: i for i, token in enumerate(tokens)}
    merges = []
    for token in tokens:
        splits = [(token[:cut], token[cut:]) for cut in range(len(token) - 1, 0, -1)]
        merges.extend(pair for pair in splits if pair[0] in ids and pair[1] in ids)
    return merges


def gemma_tokenizer(tokens: Sequence[str], token_types: Sequence[int], *,
                    bos_id: int | None, eos_id: int | None,
                    add_bos: bool = True) -> Tokenizer:
    """Gemma's SentencePiece BPE from a GGUF vocabulary: spaces become ``"▁"`` (no prefix
    space), text splits after each space, unknown characters fall back to byte tokens
    (``<0x41>``), control tokens are special and user-defined ones (``"\\n\\n"``,
    ``"<table>"``) are matched whole.

    Args:
      tokens: the vocabulary, by id (runs of spaces written with spaces, as llama.cpp's
        converter leaves them).
      token_types: llama.cpp token type per id.
      bos_id: BOS token id.
      eos_id: EOS token id.
      add_bos: whether sequences start with BOS (Gemma's always do).

    Returns:
      The tokenizer.
    """
    tk = _tokenizers()
    spelled = [_SPM_SPACE * len(t) if t and not t.strip(" ") else t for t in tokens]
    vocab = {token: i for i, token in enumerate(spelled)}
    backend = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=sentencepiece_merges(spelled),
                                         unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    backend.normalizer = tk.normalizers.Replace(" ", _SPM_SPACE)
    backend.pre_tokenizer = tk.pre_tokenizers.Split(" ", behavior="merged_with_previous")
    backend.decoder = tk.decoders.Sequence([tk.decoders.Replace(_SPM_SPACE, " "),
                                            tk.decoders.ByteFallback(), tk.decoders.Fuse()])
    backend.add_special_tokens([tk.AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(tokens, token_types, strict=True)
                                if kind == _CONTROL])
    backend.add_tokens([tk.AddedToken(t, special=False, normalized=False)
                        for t, kind in zip(tokens, token_types, strict=True)
                        if kind == _USER_DEFINED and t in vocab])
    if add_bos:  # what the saved tokenizer.json does for other readers (encode adds none)
        bos = spelled[bos_id]
        backend.post_processor = tk.processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    return Tokenizer(backend, bos_id=bos_id, eos_id=eos_id, add_bos=add_bos)


def byte_tokenizer() -> Tokenizer:
    """A byte-level tokenizer with one token per byte (256 ids) and no merges.

    Every text encodes (one id per UTF-8 byte) and decodes back exactly; it serves the small
    random models of ``jaxprune.models.RANDOM_MODELS``, which have no trained vocabulary.
    """
    tk = _tokenizers()
    alphabet = tk.pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    backend = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = tk.decoders.ByteLevel()
    return Tokenizer(backend)
