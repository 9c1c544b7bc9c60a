"""Empirical Fisher diagonal against torch autograd on the same tiny Llama."""

import numpy as np

from jaxprune import models, oneshot
from tests import lazy

torch = lazy.LazyModule("torch")
transformers = lazy.LazyModule("transformers")


def test_fisher_diagonal_matches_torch_per_segment_gradients(tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    reference = transformers.LlamaForCausalLM(config).eval()
    reference.save_pretrained(tmp_path)
    model, _ = models.load(str(tmp_path))
    segments = np.random.default_rng(0).integers(0, 50, (3, 12))
    paths = {"layers/0/self_attn/q_proj/kernel", "layers/1/mlp/down_proj/kernel"}
    ours = oneshot.empirical_fisher_diagonal(model, segments, paths, progress=False)

    expected = {p: 0.0 for p in paths}
    params = dict(reference.named_parameters())
    names = {"layers/0/self_attn/q_proj/kernel": "model.layers.0.self_attn.q_proj.weight",
             "layers/1/mlp/down_proj/kernel": "model.layers.1.mlp.down_proj.weight"}
    for row in segments:
        reference.zero_grad()
        ids = torch.as_tensor(row[None], dtype=torch.long)
        logits = reference(ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
        loss.backward()
        for path, name in names.items():
            expected[path] = expected[path] + params[name].grad.numpy().T ** 2 / len(segments)
    for path in paths:
        scale = np.max(np.abs(expected[path]))
        np.testing.assert_allclose(np.asarray(ours[path]), expected[path], rtol=1e-3,
                                   atol=1e-4 * scale)
