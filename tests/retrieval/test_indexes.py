"""The vector indexes: exact neighbours, filters inside the search, save/load, the registry, fuzzy c-means."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddx.exceptions import ConfigError, ModelError
from meddx.retrieval import indexes
from meddx.retrieval.fuzzy import fuzzy_cmeans, memberships
from meddx.retrieval.indexes import INDEXES, FlatIndex, VectorIndex, create_index, normalise, register_index
from meddx.retrieval.metrics import recall_at_k

KINDS = ("flat", "ivf", "hnsw", "fuzzy")
PARAMS = {"flat": {}, "ivf": {"nprobe": 4}, "hnsw": {}, "fuzzy": {}}


def _create(kind: str) -> VectorIndex:
    if kind == "fuzzy-spill":  # border vectors stored in two lists: hits must still be unique
        return create_index("fuzzy", 24, spill=0.3)
    return create_index(kind, 24, **PARAMS[kind])


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """3,000 vectors in 30 clusters (dim 24) and 60 queries near stored vectors."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 24))
    x = np.concatenate([c + 0.35 * rng.normal(size=(100, 24)) for c in centres]).astype(np.float32)
    queries = x[rng.choice(len(x), 60, replace=False)] + 0.05 * rng.normal(size=(60, 24)).astype(np.float32)
    return x, queries


def _exact(x: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    scores = normalise(q) @ normalise(x).T
    if allowed is not None:
        mask = np.full(len(x), -np.inf)
        mask[allowed] = 0
        scores = scores + mask
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_flat_is_exact(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    sims, ids = create_index("flat", 24).build(x).search(q, 10)
    assert recall_at_k(ids, _exact(x, q, 10), 10) == 1.0
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first
    np.testing.assert_allclose(sims[:, 0], (normalise(q) * normalise(x)[ids[:, 0]]).sum(1), atol=1e-5)


@pytest.mark.parametrize("kind", [*KINDS, "fuzzy-spill"])
def test_every_kind_finds_the_exact_neighbours(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    index = _create(kind).build(x)
    assert index.ntotal == len(x) and index.kind == kind.split("-")[0]
    _, ids = index.search(q, 10)
    assert recall_at_k(ids, _exact(x, q, 10), 10) >= 0.95
    assert all(len(set(row)) == 10 for row in ids.tolist())  # ten distinct cases


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("exact_below", [indexes.EXACT_BELOW, 0])  # 0: FAISS IDSelector / fuzzy candidate mask
def test_filters_apply_inside_the_search(kind: str, exact_below: int, data: tuple[np.ndarray, np.ndarray],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexes, "EXACT_BELOW", exact_below)
    x, q = data
    index = create_index(kind, 24, **PARAMS[kind]).build(x)
    allowed = np.arange(5, len(x), 3)  # a third of the ids, spread over every cluster
    _, ids = index.search(q, 10, allowed=allowed)
    assert np.isin(ids, allowed).all()  # full top 10, all allowed
    assert recall_at_k(ids, _exact(x, q, 10, allowed), 10) >= 0.9
    few = np.array([7, 1500, 2999])  # fewer allowed ids than k: exactly those, then empty slots
    sims, ids = index.search(q[:5], 10, allowed=few)
    assert all(set(row[row >= 0]) == set(few) for row in ids) and np.all(ids[:, 3:] == -1)
    assert np.all(np.isneginf(sims[:, 3:]))
    _, ids = index.search(q[:2], 4, allowed=np.array([], dtype=np.int64))
    assert np.all(ids == -1)


def test_post_filtering_would_have_failed(data: tuple[np.ndarray, np.ndarray]) -> None:
    """The allowed ids lie far from the query: filtering an unfiltered top 10 afterwards returns nothing."""
    x, q = data
    index = create_index("hnsw", 24).build(x)
    unfiltered = index.search(q[:1], 10)[1][0]
    allowed = np.setdiff1d(np.arange(len(x)), _exact(x, q[:1], 200)[0])
    assert not np.isin(unfiltered, allowed).any()
    _, ids = index.search(q[:1], 10, allowed=allowed)
    assert (ids >= 0).sum() == 10 and np.isin(ids, allowed).all()


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, q = data
    index = create_index(kind, 24, **PARAMS[kind]).build(x[:2000])
    index.add(x[2000:])
    before = index.search(q, 10)
    index.save(tmp_path / kind)
    loaded = VectorIndex.load(tmp_path / kind)
    assert type(loaded) is type(index) and loaded.ntotal == len(x) and loaded.params == index.params
    after = loaded.search(q, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], atol=1e-6)
    np.testing.assert_allclose(loaded.reconstruct(np.array([0, 2500])), normalise(x[[0, 2500]]), atol=1e-6)


def test_added_vectors_get_the_next_ids(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    index = create_index("flat", 24).build(x[:10])
    assert index.add(x[10:13]).tolist() == [10, 11, 12]
    assert index.search(x[11], 1)[1][0, 0] == 11


def test_errors_name_the_problem(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, _ = data
    with pytest.raises(ConfigError, match="unknown index kind 'annoy'"):
        create_index("annoy", 24)
    index = create_index("flat", 24).build(x)
    with pytest.raises(ModelError, match="16 dimensions, the index holds 24"):
        index.search(np.ones((1, 16)), 3)
    with pytest.raises(ConfigError, match="k must be at least 1"):
        index.search(x[:1], 0)
    with pytest.raises(ModelError, match="must be built"):
        create_index("ivf", 24).add(x)
    with pytest.raises(ModelError, match="vectors.json is missing"):
        VectorIndex.load(tmp_path)


def test_kinds_are_registered_by_name() -> None:
    @register_index("test-flat-copy")
    class Copy(FlatIndex):
        pass

    try:
        assert isinstance(create_index("test-flat-copy", 4), Copy)
        assert {"flat", "ivf", "hnsw", "fuzzy"} <= set(INDEXES)
    finally:
        INDEXES.pop("test-flat-copy")


def test_fuzzy_memberships_sum_to_one_and_follow_distance() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(size=(50, 2)) for c in centres])
    fitted, u, iterations = fuzzy_cmeans(points, 3, m=2.0, seed=0)
    np.testing.assert_allclose(u.sum(axis=1), 1.0, atol=1e-9)
    assert iterations < 100
    # each true cluster maps to one fitted centre, within a unit of the true one
    match = np.argmin(((fitted[:, None] - centres[None]) ** 2).sum(-1), axis=0)
    assert sorted(match.tolist()) == [0, 1, 2]
    assert np.abs(fitted[match] - centres).max() < 1.0
    u = memberships(np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]]), centres, m=2.0)
    np.testing.assert_allclose(u.sum(axis=1), 1.0)
    assert u[0, 0] == 1.0  # on a centre: fully in it
    assert u[1, 0] == pytest.approx(u[1, 1]) and u[1, 0] > u[1, 2]  # halfway: shared by the two nearest
    with pytest.raises(ConfigError, match="above 1"):
        memberships(points, centres, m=1.0)


def test_fuzzy_index_probes_more_clusters_for_border_queries(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    index = create_index("fuzzy", 24, clusters=30, coverage=0.9).build(x)
    u = index.memberships(q)
    np.testing.assert_allclose(u.sum(axis=1), 1.0, atol=1e-6)
    probed = index.probe(normalise(q))
    assert probed.sum(axis=1).min() >= 1 and probed.sum(axis=1).max() <= index.params["max_probe"]
    border = normalise(x[:1] + x[100:101])  # halfway between two clusters
    assert index.probe(border).sum() >= 2
    index.set_probe(coverage=0.0)  # only the top cluster: recall drops, which the coverage knob controls
    low = recall_at_k(index.search(q, 10)[1], _exact(x, q, 10), 10)
    index.set_probe(coverage=0.99, max_probe=30)
    assert recall_at_k(index.search(q, 10)[1], _exact(x, q, 10), 10) >= low
