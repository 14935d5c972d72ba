"""Risk prediction from clinical records (CSV, FHIR R4 bundles, HL7 v2 ORU messages).

Modules (imported on use):

- :mod:`~meddx.records.schema`: declared feature schemas per task (types, units, ranges,
  missing-value codes, label rule, LOINC codes, excluded columns) and their registry;
- :mod:`~meddx.records.transform`: the scikit-learn steps (unit harmoniser, missing
  codes, imputation (median + missingness indicators, or conditional mean without them),
  encoding, scaling) and the count of why values are missing;
- :mod:`~meddx.records.models`: logistic regression, MLP, TabNet, CatBoost, the
  TabNet+CatBoost hybrid and the LR + monotone boosting blend, all calibrated; model
  selection by repeated CV;
- :mod:`~meddx.records.explain`: per-prediction and global feature attributions;
- :mod:`~meddx.records.shift`: site-shift and missing-feature experiments;
- :mod:`~meddx.records.sites`: external checks (leave-one-site-out, simulated other
  sites), the candidate recipes they compare, and site recalibration on local cases;
- :mod:`~meddx.records.stats`: corrected repeated-CV intervals and paired tests, ECE;
- :mod:`~meddx.records.fhir`: FHIR/HL7 records in, FHIR RiskAssessment out;
- :mod:`~meddx.records.package`: ``meddx train/evaluate/predict/report`` for ``tabular`` models.
"""
