"""De-identification on ingest: DICOM (PS3.15 Basic Profile), FHIR JSON and HL7 v2.

* :mod:`meddx.privacy.pseudonyms`: the secret :class:`PseudonymKey` and what is
  derived from it (patient pseudonyms, remapped UIDs, per-patient date shifts);
* :mod:`meddx.privacy.deid`: DICOM data sets, files and folder trees;
* :mod:`meddx.privacy.records`: identifiers in FHIR resources and HL7 v2 messages.

``meddx deidentify IN OUT`` runs :func:`deidentify_path` with the key from
``--key-file``, ``MEDDX_PSEUDONYM_KEY`` or ``<home>/keys/pseudonym.key``.
"""

from __future__ import annotations

from meddx.privacy.deid import (
    basic_profile_tags,
    deidentify_dataset,
    deidentify_file,
    deidentify_path,
    effective_action,
)
from meddx.privacy.pseudonyms import PseudonymKey, shift_date, shift_datetime
from meddx.privacy.records import deidentify_fhir, deidentify_hl7

__all__ = [
    "PseudonymKey",
    "basic_profile_tags",
    "deidentify_dataset",
    "deidentify_fhir",
    "deidentify_file",
    "deidentify_hl7",
    "deidentify_path",
    "effective_action",
    "shift_date",
    "shift_datetime",
]
