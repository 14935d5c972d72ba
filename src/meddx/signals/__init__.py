"""Physiological signals: ECG beats and rhythm, PPG heart rate, actigraphy sleep/wake.

Each submodule holds one task, built on the readers of :mod:`meddx.data.readers`
(WFDB, EDF, CSV) and evaluated the way the field reports it (leave-one-record-out
for beats, cross-validation by record for rhythm, agreement with device scoring
for sleep).
"""
