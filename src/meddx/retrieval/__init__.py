"""Similar-case retrieval: embed confirmed cases with a model package, index them, search by image.

* :mod:`~meddx.retrieval.embed`: pre-logit features of an image classification package (the OOD
  gate's features), L2-normalised, batched and resumable.
* :mod:`~meddx.retrieval.indexes`: ``flat``, ``ivf``, ``hnsw`` (FAISS) and ``fuzzy``
  (:mod:`~meddx.retrieval.fuzzy`) behind ``build``/``add``/``search``/``save``/``load``, by name.
* :mod:`~meddx.retrieval.cases`: the case index (metadata filters inside the search, model versioning)
  and :func:`similar_cases`, the one call a service needs.
* :mod:`~meddx.retrieval.duplicates`: near-duplicates within a set and across its splits.
* :mod:`~meddx.retrieval.metrics`: mAP@k, precision@k, recall against exact search.

See ``docs/retrieval.md``.
"""

from meddx.retrieval.cases import FILTER_FIELDS, CaseIndex, similar_cases
from meddx.retrieval.embed import Embedder, EmbeddingOptions
from meddx.retrieval.fuzzy import FuzzyIndex  # registers the "fuzzy" kind
from meddx.retrieval.indexes import INDEXES, VectorIndex, create_index, register_index

__all__ = ["FILTER_FIELDS", "INDEXES", "CaseIndex", "Embedder", "EmbeddingOptions", "FuzzyIndex", "VectorIndex",
           "create_index", "register_index", "similar_cases"]
