"""Fine-tuning on a catalog's own interaction log (``recagent train ...``).

Floor: the same as ``eval`` (it may import ``agent``, ``retrieval``, ``prompts`` and ``eval``); nothing but the
thin ``recagent`` CLI imports ``train``.

- :mod:`train.config`: the settings of a run (data, LoRA, optimisation), pydantic models.
- :mod:`train.examples`: option-label training examples cut from the TRAIN part of the evaluator's split, rendered
  exactly as :mod:`agent.rerank.options` renders them at inference.
- :mod:`train.leakage`: the guard that no test-split interaction reaches a training example.
- :mod:`train.data`: dataset -> split -> fused candidates -> train / validation examples.
- :mod:`train.model`: model loading, LoRA, label-token loss at the last position, validation metrics.
- :mod:`train.trainer`: the loop (early stopping, resumable checkpoints, progress bar) and the output folder.
- :mod:`train.embed_pairs`: co-interaction pairs and validation queries for the embedder, from the same train log.
- :mod:`train.embed_eval`: the embedder's validation metric (in-memory retrieval recall@K and MRR).
- :mod:`train.embedder`: sentence-transformers fine-tuning of the catalog embedder and its output folder.
"""
