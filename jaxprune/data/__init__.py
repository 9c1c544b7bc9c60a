"""Text for calibration and evaluation: named sources, cached tokenization, sampling, and the
zero-shot tasks' documents."""

from jaxprune.data.calibration import calibration_segments
from jaxprune.data.sources import (
    SOURCES,
    hf_dataset_text,
    load_text,
    pydoc_topics_text,
    text_file,
    wikitext2_text,
)
from jaxprune.data.tasks import read_arrow_split, request_documents, task_data_root
from jaxprune.data.tokens import default_cache_dir, tokenize_cached

__all__ = [
    "SOURCES",
    "calibration_segments",
    "default_cache_dir",
    "hf_dataset_text",
    "load_text",
    "pydoc_topics_text",
    "read_arrow_split",
    "request_documents",
    "task_data_root",
    "text_file",
    "tokenize_cached",
    "wikitext2_text",
]
