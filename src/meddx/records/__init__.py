"""Risk prediction from clinical records (CSV, FHIR R4 bundles, HL7 v2 ORU messages).

Modules (imported on use):

- :mod:`~meddx.records.schema`: declared feature schemas per task (types, units, ranges,
  missing-value codes, label rule, LOINC codes, excluded columns) and their registry;
- :mod:`~meddx.records.transform`: the scikit-learn steps (unit harmoniser, missing
  codes, imputation with missingness indicators, encoding, scaling);
- :mod:`~meddx.records.models`: logistic regression, MLP, TabNet, CatBoost and the
  TabNet+CatBoost hybrid, all calibrated; model selection by repeated CV;
- :mod:`~meddx.records.explain`: per-prediction and global feature attributions;
- :mod:`~meddx.records.shift`: site-shift and missing-feature experiments;
- :mod:`~meddx.records.stats`: corrected repeated-CV intervals and paired tests, ECE;
- :mod:`~meddx.records.fhir`: FHIR/HL7 records in, FHIR RiskAssessment out;
- :mod:`~meddx.records.package`: ``meddx train/evaluate/predict/report`` for ``tabular`` models.
"""
