"""Log-likelihood scoring and zero-shot metrics against references written from the harness's
definitions (float64 NumPy over the model's own full forward, one request at a time)."""

import re

import jax
import numpy as np
import pytest
from flax import nnx

from jaxprune import models
from jaxprune.eval import loglikelihood, tasks, zeroshot
from jaxprune.eval.tasks import Document, Request
from tests.families import tiny_model


class WordTokenizer:
    """A toy tokenizer: one id per word with all its leading whitespace (as BPE merges " yes"),
    so a continuation's first token depends on the context's last characters."""

    eos_id = 0
    sequence_start = None  # no BOS first (SmolLM2); Gemma's tokenizer says its BOS

    def __init__(self):
        self.vocab = {}

    def encode(self, text):
        pieces = re.findall(r"\s*\S+|\s+$", text)
        return np.asarray([self.vocab.setdefault(p, len(self.vocab) + 1) for p in pieces])


def test_requests_are_split_where_the_harness_splits_them():
    tok = WordTokenizer()
    pair = loglikelihood.encode_request(tok, Request("Question: why?\nAnswer:", " yes it is"))
    assert tok.encode("Question: why?\nAnswer:").tolist() == pair.context.tolist()
    assert pair.continuation.tolist() == tok.encode("Question: why?\nAnswer: yes it is")[
        len(pair.context):].tolist()
    # Trailing spaces of the context belong to the continuation.
    moved = loglikelihood.encode_request(tok, Request("Answer:  ", "no"))
    assert moved.context.tolist() == tok.encode("Answer:").tolist()
    assert len(moved.continuation) == 1 and moved.continuation[0] == tok.vocab["  no"]
    # An empty context is the end-of-text token.
    empty = loglikelihood.encode_request(tok, Request("", " yes"))
    assert empty.context.tolist() == [0] and empty.continuation.tolist() == [tok.vocab[" yes"]]
    # ... unless the continuation starts with that token (the harness's rule).
    tok.vocab["<eot>"] = 0
    own = loglikelihood.encode_request(tok, Request("", "<eot> yes"))
    assert own.context.tolist() == [0] and own.continuation.tolist() == [tok.vocab[" yes"]]
    tok.eos_id = None
    with pytest.raises(ValueError, match="empty context needs the tokenizer's end-of-text"):
        loglikelihood.encode_request(tok, Request("", " yes"))
    # A model whose sequences start with BOS (id 99 here): contexts start with it, as the
    # harness's Hugging Face tokenizer adds it, and an empty context is BOS alone.
    tok.sequence_start = 99
    bos = loglikelihood.encode_request(tok, Request("Question: why?\nAnswer:", " yes it is"))
    assert bos.context.tolist() == [99, *pair.context.tolist()]
    assert bos.continuation.tolist() == pair.continuation.tolist()
    assert loglikelihood.encode_request(tok, Request("", " yes")).context.tolist() == [99]
    with pytest.raises(ValueError, match="has no tokens of its own"):
        loglikelihood.encode_request(tok, Request("Answer:", ""))


@pytest.fixture(scope="module")
def tiny():
    config = models.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                                num_kv_heads=2, intermediate_size=48, head_dim=8)
    return models.Llama(config, rngs=nnx.Rngs(3))


def random_pairs(seed, count):
    """Requests of a few distinct lengths (each new length compiles the reference anew)."""
    rng = np.random.default_rng(seed)
    return [loglikelihood.TokenizedRequest(rng.integers(1, 64, rng.choice([2, 9, 17])),
                                           rng.integers(1, 64, rng.choice([1, 3])))
            for _ in range(count)]


@nnx.jit
def full_logits(model, tokens):
    return model(tokens)


def reference_scores(model, pairs, max_length):
    """Each request alone through ``model(tokens)``, log-softmax in float64."""
    out = []
    for pair in pairs:
        whole = np.concatenate([pair.context, pair.continuation])
        x = whole[-(max_length + 1):][:-1]
        logits = np.asarray(full_logits(model, x[None].astype(np.int32)), np.float64)[0]
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                               keepdims=True)) - logits.max(-1, keepdims=True)
        count = len(pair.continuation)
        rows = np.arange(len(x) - count, len(x))
        out.append((logp[rows, pair.continuation].sum(),
                    bool(np.all(logits[rows].argmax(-1) == pair.continuation))))
    return out


def test_scores_equal_one_request_at_a_time_in_float64(tiny):
    pairs = random_pairs(0, 11)
    pairs.append(loglikelihood.TokenizedRequest(np.arange(1, 40) % 63 + 1, np.asarray([5, 9])))
    got = loglikelihood.score_requests(tiny, pairs, batch_size=4, max_length=18,
                                       progress=False)
    expected = reference_scores(tiny, pairs, 18)  # the longest requests lose their first tokens
    for score, (ll, greedy) in zip(got, expected, strict=True):
        assert score.loglikelihood == pytest.approx(ll, rel=1e-5, abs=1e-4)
        assert score.is_greedy == greedy
    # A greedy continuation: the model's own argmax after a context.
    context = np.asarray([3, 1, 4, 1, 5], np.int32)
    best = int(np.asarray(tiny(context[None]))[0, -1].argmax())
    greedy = loglikelihood.score_requests(
        tiny, [loglikelihood.TokenizedRequest(context, np.asarray([best]))], progress=False)
    assert greedy[0].is_greedy


def packable_groups(seed):
    """Groups shaped like the paper tasks' documents: one context with one-token choices
    (BoolQ), one context with longer choices (HellaSwag), contexts that differ after a shared
    start with one continuation (WinoGrande), a lone request, and a context longer than the
    model sees (so its truncated inputs share no prefix)."""
    rng = np.random.default_rng(seed)
    ids = lambda n: rng.integers(1, 64, n)  # noqa: E731
    pair = loglikelihood.TokenizedRequest
    context, start, rest = ids(9), ids(5), ids(3)
    long_context = ids(30)
    return [
        [pair(context, ids(1)), pair(context, ids(1))],
        [pair(context, ids(n)) for n in (3, 1, 4, 2)],
        [pair(np.concatenate([start, ids(k)]), rest) for k in (1, 2)],
        [pair(ids(4), ids(2))],
        [pair(long_context, ids(2)), pair(long_context, ids(3))],
    ]


@pytest.mark.parametrize("windows", [None, (4, None), "gemma3"])
def test_packed_groups_score_as_each_request_alone(tiny, windows):
    """Also with a sliding window in block 0: the packed masks must follow each request's own
    positions, as the plain forward's window does (for Gemma 3, with that block's own RoPE
    table)."""
    if windows == "gemma3":
        tiny = tiny_model("gemma3", seed=5)
    elif windows is not None:
        tiny = models.Llama(tiny.config.replace(attention_windows=windows), rngs=nnx.Rngs(5))
    groups = packable_groups(4)
    packed = loglikelihood.pack_group(groups[1])
    own = [len(p.continuation) - 1 for p in groups[1]]  # the last token is never an input
    assert packed.tokens.size == 9 + sum(own)  # the context once, then each choice's own
    assert packed.size == 4 and packed.reads.size == sum(len(p.continuation) for p in groups[1])
    with pytest.raises(ValueError, match="a group needs at least one request"):
        loglikelihood.pack_group([])
    empty = loglikelihood.TokenizedRequest(np.asarray([3, 4]), np.asarray([], np.int64))
    with pytest.raises(ValueError, match="a continuation of 0 tokens: it needs at least one"):
        loglikelihood.pack_group([groups[0][0], empty])
    got = loglikelihood.score_groups(tiny, groups, batch_size=2, max_length=24, progress=False)
    for group, scores in zip(groups, got, strict=True):
        expected = reference_scores(tiny, group, 24)
        assert len(scores) == len(group)
        for score, (ll, greedy) in zip(scores, expected, strict=True):
            assert score.loglikelihood == pytest.approx(ll, rel=1e-5, abs=1e-4)
            assert score.is_greedy == greedy


def test_jit_and_eager_agree(tiny):
    pairs = random_pairs(1, 2)  # one batch: eagerly, every op of the forward runs alone
    jitted = loglikelihood.score_requests(tiny, pairs, batch_size=2, progress=False)
    with jax.disable_jit():
        eager = loglikelihood.score_requests(tiny, pairs, batch_size=2, progress=False)
    for a, b in zip(jitted, eager, strict=True):
        assert a.loglikelihood == pytest.approx(b.loglikelihood, rel=1e-5, abs=1e-5)
        assert a.is_greedy == b.is_greedy


def test_scanned_blocks_equal_the_blocks_one_after_another(tiny):
    from jaxprune import structured

    # Uniform blocks are scanned; a model cut to per-block widths runs them in turn.
    ragged = structured.prune_width(tiny, mlp_channels={0: list(range(40))})
    for model in (tiny, ragged):
        h = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 32))
        cos, sin = model.rope(7)
        expected = h
        for block in model.layers:
            expected = block(expected, cos, sin)
        stacked = loglikelihood._stack_uniform_blocks(list(model.layers))
        assert (stacked is None) == (model is ragged)
        got = jax.jit(lambda x, m=model, st=stacked, c=cos, s=sin: loglikelihood._run_blocks(
            list(m.layers), st, x, c, s, {None: None}))(h)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def brute_force_padding(sizes, program_cost, step):
    """The least padded total plus program cost, by trying every set of shared sizes (each
    size padded to the smallest member at or above it)."""
    rounded = [-(-n // step) * step for n in sizes]
    values = sorted(set(rounded))
    best = float("inf")
    for mask in range(2 ** (len(values) - 1)):  # the largest value is always shared
        shared = [v for i, v in enumerate(values[:-1]) if mask >> i & 1] + [values[-1]]
        cost = sum(min(v for v in shared if v >= r) for r in rounded)
        best = min(best, cost + program_cost * len(shared))
    return best


@pytest.mark.parametrize("cost", [0.0, 3.0, 40.0, 1e6])
@pytest.mark.parametrize("step", [1, 8])
def test_shared_sizes_spend_the_least_on_padding_and_programs(cost, step):
    rng = np.random.default_rng(int(cost) + step)
    # At most 12 sizes: the brute force tries every subset of their distinct values.
    sizes = [int(n) for n in rng.integers(1, 90, int(rng.integers(2, 13)))]
    padded = loglikelihood.shared_sizes(sizes, cost, step)
    assert set(padded) == set(sizes)
    assert all(padded[n] >= n and padded[n] % step == 0 for n in sizes)
    total = sum(padded[n] for n in sizes) + cost * len(set(padded.values()))
    assert total == pytest.approx(brute_force_padding(sizes, cost, step))
    if cost == 0:  # programs are free: every size keeps its own
        assert all(padded[n] == -(-n // step) * step for n in sizes)
    if cost == 1e6:  # programs are dear: one size for all
        assert set(padded.values()) == {-(-max(sizes) // step) * step}


def test_a_batch_is_padded_to_its_longest_sequence_and_all_its_reads():
    rng = np.random.default_rng(4)
    pairs = [loglikelihood.TokenizedRequest(rng.integers(1, 64, int(rng.integers(2, 70))),
                                            rng.integers(1, 64, int(rng.integers(1, 12))))
             for _ in range(40)]
    packed = sorted((loglikelihood.pack_group([p]) for p in pairs), key=lambda g: -g.tokens.size)
    batches = [packed[i:i + 4] for i in range(0, len(packed), 4)]
    shapes = loglikelihood.batch_shapes(batches, 4)
    for batch, (length, width) in zip(batches, shapes, strict=True):
        assert length >= max(g.tokens.size for g in batch)
        assert width >= sum(g.reads.size for g in batch)
    arrays = loglikelihood._batch_arrays(batches[0], 4, *shapes[0], num_requests=2)
    tokens, _, segments, read_rows, read_cols, targets, slots = arrays
    reads = sum(g.reads.size for g in batches[0])
    assert tokens.shape == segments.shape == (4, shapes[0][0])
    assert read_rows.shape == slots.shape == (shapes[0][1],)
    # each real read points at its row's packed position and its request's slot
    assert list(slots[:reads]) == [row * 2 for row, g in enumerate(batches[0])
                                   for _ in range(g.reads.size)]
    assert list(read_cols[:reads]) == [int(r) for g in batches[0] for r in g.reads]
    assert set(slots[reads:]) <= {4 * 2}  # padding reads: the dropped slot


def test_document_metrics_follow_the_harness():
    doc = Document((Request("q", " a"), Request("q", " bbbb")), gold=1, choices=("a", "bbbb"))
    scores = lambda *lls: [loglikelihood.Score(ll, False) for ll in lls]  # noqa: E731
    arc, rte = tasks.get_task("arc_easy"), tasks.get_task("rte")
    # acc: argmax of ll picks "a"; acc_norm: -2/1 < -4/4, so "bbbb".
    assert zeroshot.document_metrics(doc, scores(-2.0, -4.0), arc) == {"acc": 0.0,
                                                                        "acc_norm": 1.0}
    assert zeroshot.document_metrics(doc, scores(-3.0, -3.0), rte) == {"acc": 0.0}  # first wins
    assert zeroshot.mean_stderr([1.0, 0.0, 1.0, 1.0]) == pytest.approx(0.25)


def test_next_word_metrics_follow_the_harness():
    lambada = tasks.get_task("lambada_openai")
    word = Document((Request("the cat sat on the", " mat"),), 0, ("mat",))
    greedy = zeroshot.document_metrics(word, [loglikelihood.Score(-0.5, True)], lambada)
    assert greedy == {"acc": 1.0, "perplexity": -0.5}
    lls = [-0.5, -2.0, -1.25]
    value, error = zeroshot.aggregate("perplexity", lls)
    assert value == pytest.approx(np.exp(1.25))  # exp of minus the mean log-likelihood
    assert error == pytest.approx(value * np.std(lls, ddof=1) / np.sqrt(3))
    assert zeroshot.aggregate("acc", [1.0, 0.0]) == (0.5, 0.5)


def test_a_task_is_scored_document_by_document():
    model, tokenizer = models.load("tiny-llama")
    result = zeroshot.evaluate_zeroshot(model, tokenizer, ["hellaswag"], limit=3,
                                        batch_size=4, progress=False)["hellaswag"]
    assert (result.name, result.split, result.num_docs) == ("hellaswag", "validation", 3)
    documents = tasks.task_documents(tasks.get_task("hellaswag"), limit=3)
    for row, doc in zip(result.documents, documents, strict=True):
        assert row["gold"] == doc.gold and len(row["loglikelihoods"]) == 4
        lengths = np.asarray([len(c) for c in doc.choices], np.float64)
        assert row["acc_norm"] == float(np.argmax(np.asarray(row["loglikelihoods"]) / lengths)
                                        == doc.gold)
    assert result.metrics["acc"] == np.mean([r["acc"] for r in result.documents])


def test_bad_zeroshot_requests_fail_before_any_work(tiny):
    with pytest.raises(ValueError, match=r"unknown zero-shot task 'lambada_standard'; known"):
        zeroshot.evaluate_zeroshot(tiny, None, ["rte", "lambada_standard"])
    with pytest.raises(ValueError, match="no task named"):
        zeroshot.evaluate_zeroshot(tiny, None, [])
    with pytest.raises(ValueError, match=r"tasks named twice: \['rte'\]"):
        zeroshot.evaluate_zeroshot(tiny, None, ["rte", "piqa", "rte"])
    with pytest.raises(ValueError, match="limit must be a positive integer or None, got 0"):
        zeroshot.evaluate_zeroshot(tiny, None, ["rte"], limit=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        loglikelihood.score_requests(tiny, random_pairs(2, 1), batch_size=0)
