"""Log-likelihood of continuations, as lm-evaluation-harness's ``loglikelihood`` requests.

A request ``(context, continuation)`` is tokenized as the harness does: trailing whitespace
of the context moves to the continuation, the continuation's tokens are those of
``context + continuation`` after the context's own tokens, and an empty context is replaced
by the end-of-text token (unless the continuation starts with it). The model sees
``(context + continuation)[:-1]``, truncated from the left to ``max_length`` tokens, and the
result is the summed log-probability of the continuation's tokens and whether each of them is
the argmax (``is_greedy``).

Requests that share a prefix (the choices of one question) are scored together: their inputs
are packed into one sequence, the common prefix once followed by each request's own tokens,
with rotary positions as in the request's own sequence and an attention mask that lets each
request's tokens see the prefix and their own earlier tokens only. The log-likelihoods are
those of scoring each request alone (up to float rounding), for about half the tokens on the
paper tasks. Packed sequences are scored longest first, a few per forward pass, padded on
the right to a few shared lengths (one compiled program of the blocks per length, the blocks
scanned when they share a structure); only the positions that predict continuation tokens go
through the LM head, all of a batch's in one flat list padded to a few shared widths (one
compiled program of the head per width). The shared lengths and widths are chosen per task,
from the batches' own sizes, to spend the least on padding and compiling together
(``shared_sizes``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.eval.head import vocab_sliced_scores
from jaxprune.eval.tasks import Request
from jaxprune.models.lazy import LazyModel
from jaxprune.models.llama import visible_keys


@dataclasses.dataclass(frozen=True)
class TokenizedRequest:
    """A request's context and continuation token ids (1-D int32)."""

    context: np.ndarray
    continuation: np.ndarray


@dataclasses.dataclass(frozen=True)
class Score:
    """A continuation's summed log-probability and whether greedy decoding would produce it."""

    loglikelihood: float
    is_greedy: bool


def encode_request(tokenizer, request: Request) -> TokenizedRequest:
    """Token ids of a request, split where the harness splits them. For a model whose sequences
    start with BOS (``tokenizer.sequence_start``: Gemma), the context starts with it, as the
    harness's Hugging Face tokenizer adds it, and an empty context is BOS alone.

    Raises:
      ValueError: when the continuation has no tokens of its own, or the context is empty and
        the tokenizer has no end-of-text token.
    """
    context, continuation = request.context, request.continuation
    start = tokenizer.sequence_start
    if not context:
        prefix = tokenizer.eos_id if start is None else start
        if prefix is None:
            raise ValueError("a request with an empty context needs the tokenizer's end-of-text "
                             "token, and this tokenizer has none")
        ids = np.asarray(tokenizer.encode(continuation), np.int32)
        # A continuation that itself starts with that token is its own context.
        starts_with_prefix = ids.size > 0 and ids[0] == prefix
        pair = (TokenizedRequest(ids[:1], ids[1:]) if starts_with_prefix else
                TokenizedRequest(np.asarray([prefix], np.int32), ids))
    else:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = np.asarray(tokenizer.encode(context + continuation), np.int32)
        own = np.asarray(tokenizer.encode(context), np.int32)
        first = own if start is None else np.concatenate([[start], own]).astype(np.int32)
        pair = TokenizedRequest(first, whole[len(own):])
    if pair.continuation.size == 0:
        raise ValueError(f"the continuation {request.continuation!r} has no tokens of its own "
                         f"after the context {request.context[-40:]!r}")
    return pair


# What compiling one more program costs, counted in the padding it could save (used by
# ``batch_shapes``). On SmolLM2-135M on 2 cores a length compiles the scanned blocks in about
# 1.1 s alone, the time of about 700 tokens, and a width compiles the head in a third of a
# length's time (0.9-1.7 s against 3.6-3.9 s beside another job), a few hundred reads. The
# total is flat near its minimum, so these need only be the right size.
LENGTH_PROGRAM_TOKENS = 1024
WIDTH_PROGRAM_READS = 256
# Shared sizes are multiples of this (vector-friendly shapes, and fewer candidates).
SIZE_STEP = 8


def shared_sizes(sizes: list[int], program_cost: float, step: int = SIZE_STEP) -> dict[int, int]:
    """Pads each size up to one of a few shared sizes, chosen to minimise the summed padded
    sizes plus ``program_cost`` per shared size (each compiles its own program): a dynamic
    program over the distinct sizes, rounded up to multiples of ``step``, in increasing order.

    Args:
      sizes: one size per item (repeats count: each item pays its padding).
      program_cost: the cost of one more shared size, in units of one item's size.
      step: the shared sizes are multiples of it.

    Returns:
      ``{size: shared size}`` for every size given; each shared size is at least its sizes.
    """
    rounded = [-(-size // step) * step for size in sizes]
    values, counts = np.unique(rounded, return_counts=True)
    before = np.concatenate([[0], np.cumsum(counts)])
    # best[j]: the least cost of the j smallest values; start[j]: where the run of values padded
    # to values[j - 1] begins.
    best, start = np.zeros(len(values) + 1), np.zeros(len(values) + 1, int)
    for j in range(1, len(values) + 1):
        options = best[:j] + (before[j] - before[:j]) * float(values[j - 1]) + program_cost
        start[j] = int(np.argmin(options))
        best[j] = options[start[j]]
    target, j = {}, len(values)
    while j:
        for value in values[start[j]:j]:
            target[int(value)] = int(values[j - 1])
        j = start[j]
    return {size: target[r] for size, r in zip(sizes, rounded, strict=True)}


@dataclasses.dataclass(frozen=True)
class PackedGroup:
    """Requests sharing a prefix, packed into one sequence.

    Attributes:
      tokens: the packed input ids ``[L]``: the common prefix, then each request's own inputs.
      positions: each packed token's position in its request's own sequence ``[L]``.
      segments: 0 for the prefix, ``r + 1`` for request ``r``'s own tokens ``[L]``.
      reads: the packed indices whose logits predict continuation tokens ``[N]``.
      targets: the continuation token each of those predicts ``[N]``.
      owners: the request (index within the group) each read belongs to ``[N]``.
    """

    tokens: np.ndarray
    positions: np.ndarray
    segments: np.ndarray
    reads: np.ndarray
    targets: np.ndarray
    owners: np.ndarray

    @property
    def size(self) -> int:
        """The number of requests packed."""
        return int(self.owners.max()) + 1


def _model_inputs(pair: TokenizedRequest, max_length: int) -> np.ndarray:
    """The ids the model sees for a request: ``(context + continuation)[:-1]``, keeping the
    last ``max_length``."""
    if not 0 < pair.continuation.size <= max_length:
        raise ValueError(f"a continuation of {pair.continuation.size} tokens: it needs at "
                         f"least one and must fit max_length={max_length}")
    return np.concatenate([pair.context, pair.continuation])[-(max_length + 1):][:-1]


def _common_prefix(sequences: list[np.ndarray]) -> int:
    first, length = sequences[0], min(len(x) for x in sequences)
    for other in sequences[1:]:
        differs = np.flatnonzero(first[:length] != other[:length])
        length = int(differs[0]) if differs.size else length
    return length


def pack_group(pairs: list[TokenizedRequest], max_length: int = 2048) -> PackedGroup:
    """Packs requests into one sequence that shares their longest common input prefix.

    Raises:
      ValueError: for no request, or a continuation that is empty or longer than
        ``max_length``.
    """
    if not pairs:
        raise ValueError("a group needs at least one request")
    inputs = [_model_inputs(pair, max_length) for pair in pairs]
    shared = _common_prefix(inputs)
    tokens, positions, segments = [inputs[0][:shared]], [np.arange(shared)], [np.zeros(shared)]
    reads, targets, owners = [], [], []
    start = shared
    for r, (x, pair) in enumerate(zip(inputs, pairs, strict=True)):
        own = len(x) - shared
        tokens.append(x[shared:])
        positions.append(np.arange(shared, len(x)))
        segments.append(np.full(own, r + 1))
        # The logits at position p predict token p + 1; positions before the request's own
        # tokens are read from the shared prefix.
        at = np.arange(len(x) - pair.continuation.size, len(x))
        reads.append(np.where(at < shared, at, start + at - shared))
        targets.append(pair.continuation)
        owners.append(np.full(pair.continuation.size, r))
        start += own
    join = lambda parts: np.concatenate(parts).astype(np.int32)  # noqa: E731
    return PackedGroup(join(tokens), join(positions), join(segments), join(reads),
                       join(targets), join(owners))


def _stack_uniform_blocks(blocks: list):
    """The blocks' shared graph and their weights stacked on a leading axis, or ``None`` when
    the blocks differ in structure (a per-block width cut). Done once per scoring call, outside
    the compiled program, so no batch pays for the stacking.

    Args:
      blocks: the model's decoder blocks, in order.

    Returns:
      ``(graph, stacked_state)`` or ``None``.
    """
    graphs = [nnx.split(block)[0] for block in blocks]
    if any(g != graphs[0] for g in graphs[1:]):
        return None
    return graphs[0], jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(b) for b in blocks])


def _run_blocks(blocks: list, stacked, h, cos, sin, masks: dict):
    """The blocks on ``h``: one ``lax.scan`` over ``stacked`` (from ``_stack_uniform_blocks``)
    when every block has the same structure (one block to compile instead of all of them:
    1.1 s against 4.9 s per batch shape on SmolLM2, same speed), else one after another."""
    if stacked is None:
        for block in blocks:
            h = block(h, cos, sin, masks[block.self_attn.window])
        return h
    graph, states = stacked
    mask = masks[blocks[0].self_attn.window]
    h, _ = jax.lax.scan(lambda x, state: (nnx.merge(graph, state)(x, cos, sin, mask), None),
                        h, states)
    return h


def _attention_masks(windows, positions, segments) -> dict:
    """One mask per attention window among the blocks, ``[B, 1, query, key]``: each packed
    request's tokens see the shared prefix and their own earlier tokens (within the window)."""
    behind = positions[:, :, None] - positions[:, None, :]  # [B, query, key]
    own_request = (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])
    return {window: (visible_keys(behind, window) & own_request)[:, None]
            for window in set(windows)}


def _read_logp(logits, targets):
    """Each read's target log-probability and whether the target is the arg-max, from its
    logits ``[W, vocab]``: the target's logit minus the logsumexp, so no ``[W, vocab]``
    log-softmax array is written."""
    logits = logits.astype(jnp.float32)
    target_logp = (jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
                   - jax.nn.logsumexp(logits, axis=-1))
    return target_logp, jnp.argmax(logits, axis=-1) == targets


def _sum_by_slot(target_logp, greedy_token, slots, num_slots: int):
    """Per-read scores ``[W]`` summed per slot ``[num_slots]`` (a request of a row), and whether
    every read of the slot was greedy (a slot without reads: True); slot ``num_slots`` takes
    the padding and is dropped."""
    sums = jax.ops.segment_sum(target_logp, slots, num_segments=num_slots + 1)
    all_greedy = jax.ops.segment_min(greedy_token.astype(jnp.int32), slots,
                                     num_segments=num_slots + 1)
    return sums[:num_slots], all_greedy[:num_slots] > 0


def _hidden_states_fn(model, stacked, tokens, positions, segments):
    masks = _attention_masks(model.config.attention_windows, positions, segments)
    cos, sin = model.rope_at(positions)
    return _run_blocks(list(model.layers), stacked, model.embed(tokens), cos, sin, masks)


# Module-level with the graphs static, so every model of one structure shares the programs.
# The blocks and the head are two programs: a batch's length and its reads' width vary apart,
# and each compiles once per value.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _hidden_states(graphdef, block_graph, state, block_states, tokens, positions, segments):
    stacked = None if block_graph is None else (block_graph, block_states)
    return _hidden_states_fn(nnx.merge(graphdef, state), stacked, tokens, positions, segments)


@functools.partial(jax.jit, static_argnums=(0, 7))
def _read_scores(graphdef, state, h, read_rows, read_cols, targets, slots, num_slots):
    model = nnx.merge(graphdef, state)
    target_logp, greedy_token = _read_logp(model.head(h[read_rows, read_cols]), targets)
    return _sum_by_slot(target_logp, greedy_token, slots, num_slots)


# The streamed scorer's three stages (a model opened lazily: one block in memory at a time).
@functools.partial(jax.jit, static_argnums=0)
def _embed_stage(shell_graph, shell_state, tokens):
    return nnx.merge(shell_graph, shell_state).embed(tokens)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _block_stage(shell_graph, block_graph, shell_state, block_state, h, positions, segments):
    shell, block = nnx.merge(shell_graph, shell_state), nnx.merge(block_graph, block_state)
    window = block.self_attn.window
    mask = _attention_masks((window,), positions, segments)[window]
    cos, sin = shell.rope_at(positions)
    return block(h, cos, sin, mask)


def _head_stage(shell, h, read_rows, read_cols, targets, slots, num_slots):
    """``_read_scores`` with the vocabulary a slice at a time (``vocab_sliced_scores``, each
    slice its own program): the whole head's float32 logits or weights are never held."""
    target_logp, greedy_token = vocab_sliced_scores(shell, h[read_rows, read_cols], targets)
    return _sum_by_slot_jit(target_logp, greedy_token, slots, num_slots)


_sum_by_slot_jit = jax.jit(_sum_by_slot, static_argnums=3)


def _per_request(num_requests: int):
    """``(sums, greedy)`` of a batch's slots as ``[rows, num_requests]`` arrays."""
    return lambda scores: tuple(x.reshape(-1, num_requests) for x in scores)


def _whole_model_scorer(model, num_requests: int):
    """``batches -> [(sums, greedy)]`` for a model in memory, one forward pass per batch."""
    graphdef, state = nnx.split(model)
    block_graph, block_states = _stack_uniform_blocks(list(model.layers)) or (None, None)
    per_request = _per_request(num_requests)

    def score(batches):
        out = []
        for tokens, positions, segments, *reads in (map(jnp.asarray, b) for b in batches):
            h = _hidden_states(graphdef, block_graph, state, block_states, tokens, positions,
                               segments)
            out.append(per_request(_read_scores(graphdef, state, h, *reads,
                                                tokens.shape[0] * num_requests)))
        return out

    return score


def _streamed_scorer(source, num_requests: int):
    """``batches -> [(sums, greedy)]`` for a ``LazyModel``: every batch embedded, then each
    block read from disk and run over all of them before the next is read, then the head."""
    shell = source.shell()
    shell_graph, shell_state = nnx.split(shell)
    per_request = _per_request(num_requests)

    def score(batches):
        inputs = [tuple(map(jnp.asarray, arrays)) for arrays in batches]
        hidden = [_embed_stage(shell_graph, shell_state, tokens) for tokens, *_ in inputs]
        for index in range(source.config.num_layers):
            block_graph, block_state = nnx.split(source.block(index))
            hidden = [_block_stage(shell_graph, block_graph, shell_state, block_state, h,
                                   positions, segments)
                      for h, (_, positions, segments, *_) in zip(hidden, inputs, strict=True)]
        return [per_request(_head_stage(shell, h, *reads, tokens.shape[0] * num_requests))
                for h, (tokens, _, _, *reads) in zip(hidden, inputs, strict=True)]

    return score


def batch_shapes(batches: list[list[PackedGroup]], rows: int) -> list[tuple[int, int]]:
    """The padded ``(length, width)`` of each batch of ``rows`` sequences: ``length`` for the
    tokens of its longest sequence, ``width`` for the reads of all its sequences together,
    each one of a few values shared between batches (``shared_sizes``)."""
    lengths = [max(g.tokens.size for g in batch) for batch in batches]
    widths = [sum(g.reads.size for g in batch) for batch in batches]
    length_of = shared_sizes(lengths, LENGTH_PROGRAM_TOKENS / rows)
    width_of = shared_sizes(widths, WIDTH_PROGRAM_READS)
    return [(length_of[n], width_of[w]) for n, w in zip(lengths, widths, strict=True)]


def _batch_arrays(groups: list[PackedGroup], rows: int, length: int, width: int,
                  num_requests: int) -> tuple[np.ndarray, ...]:
    """A batch's arrays: right-padded ``[rows, length]`` tokens, positions and segments
    (padding tokens form their own segment, -1, which no real token attends to), then the flat
    ``[width]`` reads (row and column of each position read), their targets, and the slot
    ``row * num_requests + request`` each read's log-probability is summed into (padding reads
    go to the slot after the last, ``rows * num_requests``)."""
    tokens = np.zeros((rows, length), np.int32)
    positions = np.zeros((rows, length), np.int32)
    segments = np.full((rows, length), -1, np.int32)
    read_rows, read_cols = np.zeros(width, np.int32), np.zeros(width, np.int32)
    targets, slots = np.zeros(width, np.int32), np.full(width, rows * num_requests, np.int32)
    at = 0
    for i, g in enumerate(groups):
        n, m = g.tokens.size, g.reads.size
        tokens[i, :n], positions[i, :n], segments[i, :n] = g.tokens, g.positions, g.segments
        read_rows[at:at + m], read_cols[at:at + m] = i, g.reads
        targets[at:at + m], slots[at:at + m] = g.targets, i * num_requests + g.owners
        at += m
    return tokens, positions, segments, read_rows, read_cols, targets, slots


def check_sizes(batch_size, max_length) -> None:
    """Refuses a batch size or length that is not a positive integer (ValueError)."""
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def score_groups(model, groups: list[list[TokenizedRequest]], *, batch_size: int = 8,
                 max_length: int = 2048, progress: bool = True, unit: str = "doc",
                 hold_tokens: int = 2 ** 18) -> list[list[Score]]:
    """Scores groups of requests (typically the choices of one document), each group packed
    into one sequence that shares the requests' common prefix.

    Args:
      model: a jaxprune decoder (``embed``, ``rope_at``, ``layers``, ``head``): dense, masked,
        structured-cut or with 2:4 ``SparseLinear`` layers; or a ``LazyModel`` (a model
        larger than memory), scored one block at a time over ``hold_tokens`` tokens of
        batches at once.
      groups: lists of requests, from ``encode_request``.
      batch_size: groups per forward pass (the last batch is padded to it).
      max_length: the most tokens the model sees per request; longer inputs lose their oldest
        tokens, as in the harness.
      progress: show a progress bar with groups/s.
      unit: what the progress bar calls a group.
      hold_tokens: for a ``LazyModel``, the padded tokens whose activations are held while the
        blocks are read (each read of the model serves this many).

    Returns:
      Per group, one ``Score`` per request, in the order given.

    Raises:
      ValueError: for a bad batch size, length or ``hold_tokens``, an empty group, or a
        non-finite log-likelihood.
    """
    check_sizes(batch_size, max_length)
    packed = [pack_group(group, max_length) for group in groups]
    num_requests = max((g.size for g in packed), default=1)
    order = sorted(range(len(packed)), key=lambda i: -packed[i].tokens.size)
    streamed = isinstance(model, LazyModel)
    if streamed and (isinstance(hold_tokens, bool) or not isinstance(hold_tokens, int)
                     or hold_tokens < 1):
        raise ValueError(f"hold_tokens must be a positive integer, got {hold_tokens!r}")
    scorer = (_streamed_scorer if streamed else _whole_model_scorer)(model, num_requests)
    scores: list[list[Score] | None] = [None] * len(packed)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(packed), unit=unit, desc="log-likelihood", disable=not progress)
    batches = [order[first:first + batch_size] for first in range(0, len(order), batch_size)]
    shapes = batch_shapes([[packed[i] for i in chosen] for chosen in batches], batch_size)
    for chunk in _chunks(list(zip(batches, shapes, strict=True)), batch_size,
                         hold_tokens if streamed else 0):
        arrays = [_batch_arrays([packed[i] for i in chosen], batch_size, length, width,
                                num_requests)
                  for chosen, (length, width) in chunk]
        for (chosen, _), (sums, greedy) in zip(chunk, scorer(arrays), strict=True):
            _record_scores(scores, packed, chosen, np.asarray(sums, np.float64),
                           np.asarray(greedy))
            bar.update(len(chosen))
    bar.close()
    return scores


def _chunks(batches: list, batch_size: int, hold_tokens: int) -> list[list]:
    """Consecutive batches whose padded tokens stay within ``hold_tokens`` (at least one per
    chunk); ``hold_tokens=0``: one batch per chunk."""
    chunks, held = [], 0
    for batch in batches:
        tokens = batch_size * batch[1][0]
        if not chunks or not hold_tokens or held + tokens > hold_tokens:
            chunks.append([])
            held = 0
        chunks[-1].append(batch)
        held += tokens
    return chunks


def _record_scores(scores: list, packed: list[PackedGroup], chosen: list[int],
                   sums: np.ndarray, greedy: np.ndarray) -> None:
    """Each chosen group's ``Score`` list from its row of a batch's results."""
    for row, index in enumerate(chosen):
        size = packed[index].size
        if not np.all(np.isfinite(sums[row, :size])):
            raise ValueError(f"group {index} has a non-finite log-likelihood "
                             f"({sums[row, :size]})")
        scores[index] = [Score(float(s), bool(g))
                         for s, g in zip(sums[row, :size], greedy[row, :size], strict=True)]


def context_runs(pairs: list[TokenizedRequest]) -> list[list[TokenizedRequest]]:
    """Splits requests into runs of consecutive requests with the same context tokens (the
    choices of one question, as the harness lists them)."""
    runs: list[list[TokenizedRequest]] = []
    for pair in pairs:
        if runs and np.array_equal(runs[-1][-1].context, pair.context):
            runs[-1].append(pair)
        else:
            runs.append([pair])
    return runs


def score_requests(model, pairs: list[TokenizedRequest], *, batch_size: int = 8,
                   max_length: int = 2048, progress: bool = True) -> list[Score]:
    """Scores requests, packing each run of consecutive requests with the same context
    (``context_runs``) into one sequence.

    Args and Raises: as ``score_groups``.

    Returns:
      One ``Score`` per request, in the order given.
    """
    scored = score_groups(model, context_runs(pairs), batch_size=batch_size,
                          max_length=max_length, progress=progress, unit="group")
    return [score for group in scored for score in group]
