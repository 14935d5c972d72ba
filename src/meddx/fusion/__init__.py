"""Multimodal fusion: a chest X-ray (or any image) plus a patient's clinical values.

Layout::

    data.py      the covid-cxr-ieee8023-lungbbox set (image + age, sex, temperature, SpO2, labs,
                 finding, survival) or a folder with ``clinical.csv``; plausibility cleaning
    clinical.py  clinical feature preparation: median imputation, missingness indicators, scaling
    embed.py     image embeddings from a ``meddx pretrain`` backbone (frozen trunk)
    models.py    image-only, clinical-only, late fusion (stacking of calibrated branch
                 probabilities) and intermediate fusion (gated attention over embeddings,
                 PyTorch, modality dropout); every model predicts from whichever inputs exist
    package.py   the ``meddx train/evaluate/predict`` handler for ``modality == "fusion"``

Training is routed here by ``meddx.modalities``: a package whose ``package.json`` says
``"modality": "fusion"`` is evaluated and predicted by :mod:`meddx.fusion.package`.
``meddx train`` reaches it for ``fusion:<catalogue set or folder>`` and for folders with
``clinical.csv`` (see :func:`meddx.modalities.modality_of_data` and ``docs/fusion.md``).
"""

from __future__ import annotations

from meddx.modalities import FUSION_PREFIX as PREFIX

__all__ = ["PREFIX"]
