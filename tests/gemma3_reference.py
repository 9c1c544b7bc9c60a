"""Writes what transformers computes on Gemma 3 270M's GGUF, for tests/test_gemma3.py.

transformers reads the GGUF with its own dequantization, name mapping and tokenizer converter,
independent of jaxprune's; running it takes about 80 s on the 2-core machine (its Q8_0 and Q5_0
kernels and its merge rebuilding for a 262,144-token vocabulary), too long for every CI run, so
its outputs are stored (tests/data/gemma3_270m_transformers.npz, about 200 KB) and the test
compares jaxprune's live outputs against them. Re-create them with:

  python -m tests.gemma3_reference

What is stored, on the packaged file (its SHA-256 is pinned in jaxprune.models.registry):
- the ids transformers' tokenizer gives a 64-token prompt (BOS first) and a mixed corpus;
- at each of the 64 positions, the log-sum-exp of the logits over the whole vocabulary, their
  maximum absolute value, and the logits of the 64 largest and of 256 fixed random ids;
- the greedy completion (20 new tokens) of the 64-token prompt, by ``generate`` without
  sampling.
"""

import os

import numpy as np

from tests.corpora import mixed_documents

PROMPT = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
          "France. It is named after the engineer Gustave Eiffel, whose company designed and "
          "built the tower from 1887 to 1889 for the World's Fair. Locally nicknamed \"La dame "
          "de fer\", it was constructed as the centrepiece of the 1889 World's Fair, and to "
          "crown the centennial anniversary of the French Revolution.")
NEW_TOKENS = 20
POSITIONS = 64
TOP = 64
RANDOM_IDS = np.random.default_rng(0).choice(262_144, size=256, replace=False)
PATH = os.path.join(os.path.dirname(__file__), "data", "gemma3_270m_transformers.npz")


def tokenizer_corpus() -> list[str]:
    """Prose, code, digits, whitespace runs and several scripts, from the standard library."""
    import difflib
    import inspect
    import json
    from pydoc_data.topics import topics

    documents = [topics[name] for name in sorted(topics)[:12]]
    documents += [inspect.getsource(json.decoder), inspect.getsource(difflib)[:6000]]
    scripts = "".join(chr(c) for c in list(range(0x391, 0x3A9)) + list(range(0x410, 0x44F))
                      + list(range(0x4E00, 0x4E40)) + list(range(0x1F600, 0x1F620)))
    pieces = ["  ", "\t", "\n", "\n\n", "   \n", "2024", "3.14159", " 42", "café", "naïve",
              "\u00a0", "<start_of_turn>", "<eos>", "<table>", "    def"]
    return documents + mixed_documents(scripts, pieces, seed=1, count=60, words=12, extras=8)


def main() -> None:
    import torch
    import transformers

    from jaxprune import models

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory, name = os.path.split(models.packaged_model_path("gemma3-270m"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32).eval()
    ids = tokenizer(PROMPT)["input_ids"][:POSITIONS]
    assert len(ids) == POSITIONS and ids[0] == tokenizer.bos_token_id
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
        greedy = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)),
                                max_new_tokens=NEW_TOKENS, do_sample=False)[0]
    top = torch.topk(logits, TOP, dim=-1).indices
    corpus = tokenizer_corpus()
    corpus_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in corpus]
    np.savez_compressed(
        PATH, ids=np.asarray(ids, np.int32),
        logsumexp=torch.logsumexp(logits, -1).numpy(),
        max_abs=logits.abs().max(-1).values.numpy(),
        top_ids=top.numpy().astype(np.int32),
        top_logits=torch.gather(logits, 1, top).numpy(),
        random_ids=RANDOM_IDS.astype(np.int32),
        random_logits=logits[:, torch.as_tensor(RANDOM_IDS)].numpy(),
        completion=greedy.numpy().astype(np.int32),
        corpus_lengths=np.asarray([len(x) for x in corpus_ids], np.int32),
        corpus_ids=np.asarray([i for x in corpus_ids for i in x], np.int32),
        transformers_version=np.asarray(transformers.__version__))
    print(f"wrote {PATH}: {len(corpus)} texts, {sum(map(len, corpus_ids))} corpus ids")


if __name__ == "__main__":
    main()
