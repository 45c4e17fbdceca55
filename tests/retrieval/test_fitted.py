from pathlib import Path

import pytest

from retrieval.config import StoreConfig
from retrieval.errors import ConfigError
from retrieval.fitted import artifact_dir, log_fingerprint
from retrieval.interactions import Interactions


def _log(rows: list[tuple[str, str, float, int]]) -> Interactions:
    users, items, ratings, times = zip(*rows, strict=True)
    return Interactions.from_records(list(users), list(items), list(ratings), list(times))


def test_fingerprint_is_stable_and_sees_every_change() -> None:
    rows = [("u1", "a", 4.0, 1), ("u1", "b", 3.0, 2), ("u2", "a", 5.0, 1)]
    base = log_fingerprint(_log(rows))
    assert base == log_fingerprint(_log(list(rows)))
    assert base == log_fingerprint(_log([rows[2], rows[0], rows[1]]))  # same rows, other file order
    assert base != log_fingerprint(_log([*rows[:2], ("u2", "a", 4.0, 1)]))  # a rating changed
    assert base != log_fingerprint(_log([*rows[:2], ("u2", "a", 5.0, 9)]))  # a time changed
    assert base != log_fingerprint(_log(rows[:2]))  # a row removed
    assert base != log_fingerprint(_log([*rows, ("u2", "c", 1.0, 3)]))  # a row added
    assert len(base) == 16


def test_artifact_dir_sits_beside_the_store(tmp_path: Path) -> None:
    store = StoreConfig(path=tmp_path / "chroma")
    assert artifact_dir(store, "movies", "transition") == tmp_path / "artifacts" / "movies" / "transition"
    with pytest.raises(ConfigError, match="collection"):
        artifact_dir(store, "x", "transition")
    with pytest.raises(ConfigError, match="artifact kind"):
        artifact_dir(store, "movies", "../up")
