"""Named text sources: each returns one string, the text of one split.

* ``pydoc``: Python's ``pydoc_data.topics``, always installed; splits ``train`` and ``test``
  (every fifth topic, sorted by name).
* ``wikitext2``: WikiText-2 raw from a directory (``wiki.{split}.raw``); ``test``, and
  ``train``/``valid`` when present.
* ``file``: any local UTF-8 text file, whole.
* ``hf``: a Hugging Face ``datasets`` dataset, when installed and cached; any split.
"""

from __future__ import annotations

import os

SOURCES = ("pydoc", "wikitext2", "file", "hf")


def pydoc_topics_text(split: str = "test") -> str:
    """Python's help topics, split deterministically: every fifth topic (by name) is ``test``."""
    from pydoc_data.topics import topics

    if split not in ("train", "test"):
        raise ValueError(f"split of source 'pydoc' must be 'train' or 'test', got {split!r}")
    names = sorted(topics)
    chosen = [n for i, n in enumerate(names) if (i % 5 == 0) == (split == "test")]
    return "\n\n".join(topics[n].strip() for n in chosen)


def wikitext2_text(directory: str, split: str = "test") -> str:
    """The raw WikiText-2 split ``wiki.{split}.raw`` from ``directory``, as one string."""
    if not directory:
        raise ValueError("source 'wikitext2' needs a path: the directory holding wiki.test.raw")
    path = os.path.join(directory, f"wiki.{split}.raw")
    if not os.path.isfile(path):
        present = sorted(f for f in os.listdir(directory) if f.endswith(".raw")) if (
            os.path.isdir(directory)) else []
        raise FileNotFoundError(
            f"WikiText-2 split {split!r} not found: {path} (present: {present or 'nothing'})"
        )
    return text_file(path)


def text_file(path: str) -> str:
    """The whole content of a UTF-8 text file."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path!r}")
    with open(path, encoding="utf-8") as f:
        return f.read()


def hf_dataset_text(name: str, split: str = "test", *, subset: str | None = None,
                    column: str = "text") -> str:
    """Rows of a cached Hugging Face dataset joined by blank lines (the papers' protocol)."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError("source 'hf' needs the 'datasets' package") from err
    try:
        rows = datasets.load_dataset(name, subset, split=split)
    except Exception as err:
        raise FileNotFoundError(
            f"Hugging Face dataset {name!r} ({subset}, {split}) could not be loaded; it must "
            f"be in the local cache: {err}"
        ) from err
    return "\n\n".join(rows[column])


def load_text(source: str, *, path: str = "", split: str = "test") -> str:
    """Text of a named source.

    Args:
      source: one of ``SOURCES``.
      path: directory (``wikitext2``), file (``file``) or dataset name (``hf``, optionally
        ``name:subset``); unused by ``pydoc``.
      split: which split.

    Returns:
      The text.

    Raises:
      ValueError: for an unknown source or split.
      FileNotFoundError: for missing files.
    """
    if source == "pydoc":
        return pydoc_topics_text(split)
    if source == "wikitext2":
        return wikitext2_text(path, split)
    if source == "file":
        return text_file(path)
    if source == "hf":
        name, _, subset = path.partition(":")
        return hf_dataset_text(name, split, subset=subset or None)
    raise ValueError(f"text source must be one of {list(SOURCES)}, got {source!r}")
