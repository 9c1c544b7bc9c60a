"""Hugging Face Hub ids (``"HuggingFaceTB/SmolLM2-135M"``) to local checkpoint directories.

``huggingface_hub.snapshot_download`` fetches (or, offline, finds) the files a checkpoint
directory needs in the Hugging Face cache, honouring ``HF_HOME``, ``HF_HUB_CACHE`` and
``HF_HUB_OFFLINE`` as every Hugging Face library does.
"""

from __future__ import annotations

import re

# owner/name, as the Hub spells repository ids.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What load_hf_dir reads: the config, the (sharded) safetensors and the tokenizer.
CHECKPOINT_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json",
                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "generation_config.json")


def is_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name))


def hub_snapshot(repo_id: str, revision: str | None = None) -> str:
    """The local directory of ``repo_id``'s checkpoint files, downloaded unless cached.

    Args:
      repo_id: ``owner/name`` on the Hugging Face Hub.
      revision: a branch, tag or commit (``None``: the default branch).

    Returns:
      The snapshot directory in the Hugging Face cache.

    Raises:
      ImportError: without ``huggingface_hub`` (``pip install 'jaxprune[models]'``).
      FileNotFoundError: for a model that is not cached while ``HF_HUB_OFFLINE`` is set, or
        that the Hub does not have, naming the id and the cache.
    """
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError as err:
        raise ImportError("loading a Hugging Face Hub id needs huggingface_hub: "
                          "pip install 'jaxprune[models]'") from err
    cache = constants.HF_HUB_CACHE
    try:
        return huggingface_hub.snapshot_download(repo_id, revision=revision,
                                                 allow_patterns=list(CHECKPOINT_FILES))
    except errors.LocalEntryNotFoundError as err:
        raise FileNotFoundError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({cache}) and "
            "HF_HUB_OFFLINE is set (or the Hub cannot be reached): download it where the "
            "network is allowed, or point HF_HOME / HF_HUB_CACHE at a cache that holds it"
        ) from err
    except errors.RepositoryNotFoundError as err:
        raise FileNotFoundError(f"the Hugging Face Hub has no model {repo_id!r} (or it is "
                                "gated: log in with `hf auth login`)") from err
