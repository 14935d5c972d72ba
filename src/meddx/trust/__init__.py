"""Is this input one the model was made for? The checks every modality passes before a decision.

- :mod:`meddx.trust.intended`: the package's declared intended input (DICOM modality, body
  part, photometric interpretation, channels, size; sampling rate and length for signals;
  units and ranges for records) and the check that rejects an input contradicting it;
- :mod:`meddx.trust.ood`: out-of-distribution detectors on the model's own features
  (Mahalanobis, deep kNN, energy), fitted on training features with a threshold chosen on
  validation data for a stated in-distribution flag rate, stored in the package;
- :mod:`meddx.trust.decide`: the single place that turns calibration, conformal set,
  abstention, the input check and the OOD flag into one decision and its reason;
- :mod:`meddx.trust.drift`: site shift on a batch (two-sample tests, flag share, a plain
  recommendation) and a sequential drift monitor with a stated false-alarm rate.

Calibration, conformal prediction and abstention stay in :mod:`meddx.calibration` and
:mod:`meddx.inference.trust`; this package holds what those cannot see: inputs from
outside the training distribution.
"""
