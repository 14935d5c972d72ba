"""Retrieval tests run FAISS on one thread: OpenMP threads spinning on a busy CI machine cost seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_faiss_thread() -> Iterator[None]:
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
