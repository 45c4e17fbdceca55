"""The log a model must learn from to serve one of the evaluator's splits: the split's test-part train log.

`recagent eval run --split S` hands the pipeline the train log of split ``S`` (test targets, and for ``temporal``
everything after them, removed). A model fitted on that log (the learned ranker with ``--serve eval``, the
sequential model with ``--split S``) is accepted by the pipeline's log-fingerprint check and never saw a test target.
"""

from __future__ import annotations

from agent.errors import InputError
from eval.datasets import EvalDataset
from eval.protocol import make_split
from retrieval.interactions import Interactions
from train.config import SplitOptions

__all__ = ["eval_train_log"]


def eval_train_log(dataset: EvalDataset, options: SplitOptions) -> Interactions:
    """The train log `recagent eval run` serves for ``options`` (the evaluator's split, min rating/history, users,
    seed); InputError when the dataset has no interaction log."""
    if dataset.kind != "interactions" or dataset.interactions is None:
        raise InputError(f"{dataset.name} has no interaction log", hint="give --interactions (a ratings file)")
    split = make_split(dataset, options.protocol())
    assert split.train is not None
    return split.train
