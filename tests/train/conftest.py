"""Fixtures of the training tests: the 300-movie MovieLens sample ingested once, real examples built from it, and
a small adapter trained on the tiny random model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent.settings import Settings, load_settings
from retrieval.embed import Embedder, make_embedder

from testkit import SAMPLE_COLLECTION, tiny_settings
from toy import toy_examples

TRAIN_COLLECTION = SAMPLE_COLLECTION


@pytest.fixture(scope="session")
def train_home(sample_home: Path) -> Path:
    return sample_home


@pytest.fixture(scope="session")
def train_settings(train_home: Path) -> Settings:
    return load_settings(home=train_home, collection=TRAIN_COLLECTION)


@pytest.fixture(scope="session")
def train_embedder(train_settings: Settings) -> Embedder:
    return make_embedder(train_settings.embed_config(progress=False))


@pytest.fixture(scope="session")
def ml_train_data(train_settings: Settings, train_embedder: Embedder, ml_sample: Path) -> object:
    """Examples from the sample under the evaluator's temporal split (40 test users sampled, as `eval run
    --users 40` would)."""
    from eval.provenance import DeterministicStore
    from train.config import DataConfig
    from train.data import build_data, load_data

    dataset = load_data(ml_sample, ml_sample / "ratings.csv")
    cfg = DataConfig(users=40, val_users=10, val_examples_per_user=3, max_train_users=60, examples_per_user=2,
                     history=5, options=8)  # fmt: skip
    return build_data(train_settings, dataset, cfg, embedder=train_embedder,
                      store=DeterministicStore(train_settings.store_config()), collection=TRAIN_COLLECTION,
                      progress=False)  # fmt: skip


@pytest.fixture(scope="session")
def toy_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter trained a few steps on the toy task (large learning rate: it must move the scores), on the last
    of the tiny model's two layers only (``--lora-layers 1``: the serving tests then cover a partial adapter)."""
    from train.config import DataConfig, TrainConfig
    from train.trainer import train_ranker

    out = tmp_path_factory.mktemp("adapters") / "toy"
    cfg = TrainConfig(lr=5e-3, max_steps=6, eval_every=3, batch_size=8, patience=5, lora_dropout=0.0, keep="last",
                      lora_layers=1)  # fmt: skip
    train, val = toy_examples(48), toy_examples(8, seed=1, prefix="v")
    train_ranker(tiny_settings(tiny_model_dir), str(tiny_model_dir), train, val, out, forbidden={},
                 data_cfg=DataConfig(), train_cfg=cfg, progress=False, merge=True)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_st_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT sentence-transformer (2 layers, width 32, mean pooling) with the bundled MiniLM's
    tokenizer, saved by SentenceTransformer.save(): a base model for the embedder tests that trains in seconds."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from retrieval.embed import default_model_path

    root = tmp_path_factory.mktemp("tiny-st")
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(root / "hf"))
    tokenizer.save_pretrained(str(root / "hf"))
    transformer = Transformer(str(root / "hf"), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean")], device="cpu")
    model.save(str(root / "st"), create_model_card=False)
    return root / "st"
