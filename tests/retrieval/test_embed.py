"""Resumable embedding and case metadata (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddx.exceptions import ConfigError
from meddx.retrieval.cases import age_band
from meddx.retrieval.embed import embed_chunks


def test_embedding_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    calls: list[int] = []
    boom = {"at": 10}

    def load(start: int, stop: int) -> np.ndarray:
        if start == boom["at"]:
            raise KeyboardInterrupt  # the run is stopped during the third chunk
        calls.append(start)
        return np.arange(start, stop, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)

    with pytest.raises(KeyboardInterrupt):
        embed_chunks(13, load, lambda x: x, chunk_size=5, checkpoint=tmp_path, identity={"m": 1}, progress=False)
    assert calls == [0, 5] and sorted(p.name for p in tmp_path.glob("chunk_*")) == ["chunk_00000.npy",
                                                                                     "chunk_00001.npy"]
    boom["at"] = -1
    calls.clear()
    vectors = embed_chunks(13, load, lambda x: x, chunk_size=5, checkpoint=tmp_path, identity={"m": 1},
                           progress=False)
    assert calls == [10] and vectors[:, 0].tolist() == list(range(13))  # only the missing chunk was embedded
    with pytest.raises(ConfigError, match="another model"):
        embed_chunks(13, load, lambda x: x, chunk_size=5, checkpoint=tmp_path, identity={"m": 2}, progress=False)


def test_age_bands() -> None:
    assert age_band(47) == "40-49" and age_band("5") == "0-9" and age_band(None) is None and age_band("x") is None
