"""Retrieval layer: catalogs -> Chroma -> candidate sources -> fused candidates.

Import from the modules (kept light on purpose: ``import retrieval.errors`` must not load Chroma or torch):
``retrieval.catalog`` (read_catalog, item_document), ``retrieval.mapping`` (ColumnMapping, load_mapping),
``retrieval.movielens`` (the MovieLens readers), ``retrieval.store`` (Store, ItemCollection),
``retrieval.embed`` (make_embedder, LangChainEmbeddings), ``retrieval.ingest`` (ingest),
``retrieval.interactions`` (read_interactions, Interactions), ``retrieval.candidates`` (CandidateGenerator, sources,
rrf_fuse), ``retrieval.types`` and ``retrieval.config``.
"""
