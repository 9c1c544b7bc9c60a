"""Exports read back by transformers (jaxprune.models.reader_parity, experiments.export_check)."""

import json

import numpy as np
import pytest

from jaxprune.models import reader_parity
from tests import inprocess


def test_next_token_perplexity_matches_torch_cross_entropy():
    import torch

    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(3, 9, 50)) * 4).astype(np.float32)
    tokens = rng.integers(0, 50, (3, 9))
    loss = torch.nn.functional.cross_entropy(torch.tensor(logits[:, :-1]).reshape(-1, 50),
                                             torch.tensor(tokens[:, 1:]).reshape(-1))
    assert reader_parity.next_token_perplexity(logits, tokens) == pytest.approx(
        float(torch.exp(loss)), rel=1e-5)


def test_agreement_refuses_mismatched_or_non_finite_logits():
    logits = np.random.default_rng(1).normal(size=(1, 4, 8)).astype(np.float32)
    tokens = np.zeros((1, 4), int) + 3
    with pytest.raises(ValueError, match="logits of different shapes"):
        reader_parity.logit_agreement(logits, logits[:, :3], tokens[:, :3])
    broken = logits.copy()
    broken[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="the other logits are not all finite"):
        reader_parity.logit_agreement(logits, broken, tokens)


def test_read_back_refuses_an_unknown_gguf_type_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"gguf_types has \['Q5_K'\]; allowed"):
        reader_parity.exports_read_back(None, None, np.ones((1, 4), int), str(tmp_path),
                                        gguf_types=("F16", "Q5_K"))
    assert not list(tmp_path.iterdir())


def test_every_export_of_a_pruned_model_reads_back_in_transformers(tmp_path):
    """SparseGPT 2:4 on the tiny model: transformers' logits of each GGUF type are within the
    type's rounding of the pruned model's (and equal jaxprune's reading of the same file),
    and those of the compressed-tensors checkpoint equal the quantized model's."""
    out = tmp_path / "check.json"
    result = inprocess.run("experiments.export_check", "--config=configs/export_check.py:runlocal",
                           f"--config.export_dir={tmp_path / 'files'}", f"--config.out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["export"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["GGUF F16", "GGUF Q8_0", "GGUF Q4_0",
                          "compressed-tensors int4-g32-sym"]
    # Each type's rounding, as a fraction of the largest logit (tests/test_gguf_export.py).
    for label, bound in (("GGUF F16", 0.01), ("GGUF Q8_0", 0.1), ("GGUF Q4_0", 0.8)):
        assert 0 < rows[label]["rel_max_diff"] <= bound, label
        assert rows[label]["jaxprune_rel_max_diff"] < 1e-4, label
    assert rows["GGUF F16"]["top1_agreement"] > 0.95
    assert rows["GGUF F16"]["perplexity"] == pytest.approx(
        rows["GGUF F16"]["reference_perplexity"], rel=1e-3)
    exact = rows["compressed-tensors int4-g32-sym"]
    assert exact["rel_max_diff"] < 1e-5 and exact["top1_agreement"] == 1.0
    assert (tmp_path / "files" / "compressed" / "config.json").is_file()
    assert "| GGUF Q4_0 |" in result.stdout


def test_an_unknown_gguf_type_is_refused_before_work():
    result = inprocess.run("experiments.export_check", "--config=configs/export_check.py:runlocal",
                           "--config.gguf_types=F16,Q5_K")
    assert result.returncode != 0
    assert "config.gguf_types has ['Q5_K']; allowed: ('F32', 'F16', 'Q8_0', 'Q4_0')" in \
        result.stderr
    assert "block" not in result.stderr
