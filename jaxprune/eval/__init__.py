"""Metrics: perplexity by the papers' protocol, greedy generation for smoke checks, greedy
decoding with a key/value cache (the serving regime), and the zero-shot tasks' requests as
lm-evaluation-harness poses them."""

from jaxprune.eval.decode import forward_with_cache, greedy_decode, init_cache
from jaxprune.eval.generate import greedy_generate
from jaxprune.eval.head import vocab_sliced_scores
from jaxprune.eval.loglikelihood import Score, TokenizedRequest, encode_request, score_requests
from jaxprune.eval.perplexity import (
    PerplexityResult,
    evaluation_windows,
    perplexity,
    streamed_perplexity,
)
from jaxprune.eval.tasks import (
    PAPER_TASKS,
    TASKS,
    Document,
    Request,
    Task,
    get_task,
    task_documents,
)
from jaxprune.eval.zeroshot import TaskResult, evaluate_task, evaluate_zeroshot

__all__ = ["PAPER_TASKS", "TASKS", "Document", "PerplexityResult", "Request", "Score", "Task",
           "TaskResult", "TokenizedRequest", "encode_request", "evaluate_task",
           "evaluate_zeroshot", "evaluation_windows", "forward_with_cache", "get_task",
           "greedy_decode", "greedy_generate", "init_cache", "perplexity", "score_requests",
           "streamed_perplexity", "task_documents", "vocab_sliced_scores"]
