"""Clinical records from FHIR R4 bundles and HL7 v2 messages, and FHIR RiskAssessments out.

:func:`record_frame` reads a FHIR bundle (or resource) or an HL7 v2 ORU message with
the foundation readers (:func:`meddx.data.readers.read`) and fills a task's features:

* an Observation / OBX whose LOINC code is listed for a feature gives its value
  (the latest by time when there are several) and its unit; the unit is recorded in
  ``frame.attrs["units"]`` so :class:`~meddx.records.transform.UnitHarmoniser`
  converts it (cholesterol in mmol/L -> mg/dL);
* ``Patient.gender`` / PID-8 fills the task's sex feature;
* ``Patient.birthDate`` / PID-7 gives the age (at the latest observation, else today)
  when no age Observation is present.

Every other feature stays missing and is flagged by ``predict``; a value in a unit meddx
cannot convert, or outside the feature's plausible range, rejects that patient's record.

:func:`risk_assessment` turns a :class:`~meddx.inference.schema.Prediction` dict into a
FHIR RiskAssessment, validated with ``fhir.resources`` (R4B models: the package has no
R4 set; RiskAssessment is the same in R4 and R4B).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from meddx.exceptions import InvalidValueError
from meddx.records.schema import AGE_FEATURE, SEX_VALUES, TaskSchema
from meddx.trust.decide import OOD_REASON

LOINC_SYSTEMS = {"http://loinc.org", "LN", "LOINC", "urn:oid:2.16.840.1.113883.6.1"}
RECORD_SUFFIXES = {".json", ".fhir", ".hl7", ".hl7v2", ".oru", ".txt"}


def _date(text: Any) -> dt.date | None:
    if not isinstance(text, str) or len(text) < 4:
        return None
    try:
        return dt.date.fromisoformat(text[:10]) if len(text) >= 10 else dt.date(int(text[:4]), 7, 1)
    except ValueError:
        return None


def record_frame(path: str | Path, task: TaskSchema) -> tuple[Any, dict[str, str]]:
    """(one-row-per-patient DataFrame of the task's features, feature -> where its value came from).

    Each patient's own units and sources are in ``frame.attrs["row_units"]`` and
    ``frame.attrs["row_sources"]`` (keyed by the frame's index); ``attrs["units"]`` and the
    returned sources are their union, as before. An Observation with a LOINC code of a
    feature but a text value (``valueString``) keeps the text, so the intended-input check
    rejects it by name instead of the value silently going missing.
    """
    import pandas as pd

    from meddx.data.readers import read

    sample = read(Path(path))
    obs = sample.observations
    patients = sample.patients
    ids = [p for p in (patients["id"].tolist() if patients is not None and len(patients) else []) if p]
    ids = ids or [None]
    rows, units, sources = [], {}, {}
    row_units: dict[str, dict[str, str]] = {}
    row_sources: dict[str, dict[str, str]] = {}
    index = [str(p) if p is not None else str(i) for i, p in enumerate(ids)]
    for key, pid in zip(index, ids, strict=True):
        row: dict[str, Any] = {}
        mine_units: dict[str, str] = {}
        mine_sources: dict[str, str] = {}
        mine = obs
        if obs is not None and len(obs) and pid is not None and obs["patient_id"].notna().any():
            mine = obs[(obs["patient_id"] == pid) | obs["patient_id"].isna()]
        latest: dt.date | None = None
        if mine is not None and len(mine):
            loinc = mine[mine["system"].isin(LOINC_SYSTEMS)]
            times = [d for d in (_date(t) for t in mine["time"].tolist()) if d]
            latest = max(times) if times else None
            text = loinc["value_string"] if "value_string" in loinc else pd.Series(None, index=loinc.index)
            for f in task.features:
                hits = loinc[loinc["code"].isin(f.loinc)] if f.loinc else loinc.iloc[:0]
                hits = hits[hits["value"].notna() | text.reindex(hits.index).notna()]
                if not len(hits):
                    continue
                hit = hits.sort_values("time", na_position="first").iloc[-1]
                value = hit["value"]
                row[f.name] = float(value) if value == value else str(hit.get("value_string"))
                if isinstance(hit["unit"], str) and hit["unit"]:
                    mine_units[f.name] = hit["unit"]
                mine_sources[f.name] = f"LOINC {hit['code']}"
        if patients is not None and len(patients):
            prow = patients[patients["id"] == pid].iloc[0] if pid is not None else patients.iloc[0]
            sex = SEX_VALUES.get(task.name)
            gender = prow.get("sex")
            if sex and isinstance(gender, str) and gender.lower() in sex and sex["feature"] in task.names:
                row[sex["feature"]] = sex[gender.lower()]
                mine_sources[sex["feature"]] = "Patient.gender"
            age_feature = AGE_FEATURE.get(task.name)
            born = _date(prow.get("birth_date"))
            if age_feature and age_feature in task.names and age_feature not in row and born:
                at = latest or dt.date.today()
                row[age_feature] = (at - born).days / 365.25
                mine_units.pop(age_feature, None)
                mine_sources[age_feature] = "Patient.birthDate"
        rows.append(row)
        row_units[key], row_sources[key] = mine_units, mine_sources
        units.update(mine_units)
        sources.update(mine_sources)
    frame = pd.DataFrame(rows, columns=task.names)
    numeric = {f.name: float for f in task.features if f.kind != "categorical"
               and not any(isinstance(r.get(f.name), str) for r in rows)}
    frame = frame.astype(numeric)
    frame.index = index
    frame.attrs["units"] = units
    frame.attrs["row_units"] = row_units
    frame.attrs["row_sources"] = row_sources
    return frame, sources


def risk_assessment(prediction: dict[str, Any], *, subject: str | None = None,
                    when: str | None = None) -> dict[str, Any]:
    """A FHIR RiskAssessment (dict) for one prediction of a binary records model, validated.

    A prediction is only stated as a risk when the model may be used for the record:

    * **rejected** (the record contradicts the intended input): ``status`` ``cancelled``, no
      ``prediction`` element, and a note with the reasons and fixes;
    * **outside the training data** (OOD flagged): ``status`` ``preliminary``; the prediction has no
      ``probabilityDecimal`` and its ``qualitativeRisk`` says "not assessed"; the model's number is
      kept only in the rationale text, with the reason, so no system reads it as a risk;
    * otherwise ``final``, the probability and a high/low qualitative risk, as before.
    """
    from fhir.resources.R4B.riskassessment import RiskAssessment

    names = prediction["class_names"]
    positive = names[-1]
    decision = prediction["decision"]
    ood = prediction.get("ood") or {}
    rejected = decision["decision"] == "rejected" or not prediction.get("calibrated_probabilities")
    outside = not rejected and (bool(ood.get("flagged")) or decision["reason"].startswith(OOD_REASON))
    notes = [f"meddx decision: {decision['decision']} ({decision['reason']})"]
    warnings = list(prediction.get("warnings") or [])
    if prediction.get("missing_features") and not any(w.startswith("missing features") for w in warnings):
        notes.append("missing features (imputed): " + ", ".join(prediction["missing_features"]))
    notes += warnings
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "status": "cancelled" if rejected else "preliminary" if outside else "final",
        "subject": {"reference": f"Patient/{subject}"} if subject else {"display": str(prediction["input"])},
        "occurrenceDateTime": when or dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "method": {"text": f"meddx {prediction['model']} {prediction['model_version']} "
                           f"(calibration: {prediction['calibration']})"},
    }
    if rejected:
        notes.insert(0, "not assessed: this record is not an input the model was made for; "
                        "no risk was computed (" + "; ".join((prediction.get("input_check") or {}).get("reasons")
                                                           or [decision["reason"]]) + ")")
    else:
        p = float(prediction["calibrated_probabilities"][positive])
        attributions = prediction.get("attributions") or {}
        top = sorted(attributions.items(), key=lambda kv: -abs(kv[1]))[:5]
        rationale = "; ".join(f"{k} {v:+.2f}" for k, v in top)
        if outside:
            notes.insert(0, f"not a risk estimate: {decision['reason']}")
            resource["prediction"] = [{
                "outcome": {"text": positive},
                "qualitativeRisk": {"text": "not assessed: outside the model's training data; refer"},
                "rationale": f"the model's output (P = {p:.2f}) is not reliable for this record: "
                             f"{decision['reason']}",
            }]
        else:
            resource["prediction"] = [{
                "outcome": {"text": positive},
                "probabilityDecimal": round(p, 6),
                "qualitativeRisk": {"text": "high" if p >= 0.5 else "low"},
                **({"rationale": f"largest feature contributions to the log-odds: {rationale}"} if rationale else {}),
            }]
    resource["note"] = [{"text": n} for n in notes]
    try:
        RiskAssessment.model_validate(resource)
    except Exception as exc:  # pydantic.ValidationError
        raise InvalidValueError(f"the RiskAssessment is not valid FHIR: {exc}", field="RiskAssessment") from exc
    return resource


def main(argv: list[str] | None = None) -> int:
    """``python -m meddx.records.fhir PREDICTION.json [PATIENT_ID]``: print the RiskAssessment."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    value = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    predictions = value if isinstance(value, list) else [value]
    out = [risk_assessment(p, subject=args[1] if len(args) > 1 else None) for p in predictions]
    print(json.dumps(out if len(out) > 1 else out[0], indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

__all__ = ["record_frame", "risk_assessment"]
