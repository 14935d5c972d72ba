"""A prediction as a FHIR R4 DiagnosticReport with its Observations, ready to post to an EHR.

Validated with the ``fhir.resources`` models (R4B, the R4-compatible release) before
it leaves the service. The patient is referenced by pseudonym only; the model and
its version are named in the report's ``performer`` display and in a device note.

What the report says depends on the decision (:mod:`meddx.trust.decide`), so an
EHR never files a guess as a finding:

* ``rejected`` (the input is not what the model was made for): status
  ``cancelled``, no probability Observations and no conclusion code, the
  reasons in the conclusion;
* ``refer`` because the OOD gate flagged the input: the conclusion says it was
  referred because the image is outside the model's training data, every
  probability Observation carries that warning, and an Observation holds the
  OOD score against its threshold (interpretation ``H``, high);
* otherwise the calibrated probabilities and the decision, as before.

A segmentation or detection result says its task in the report's code, its
findings in the conclusion ("3 RBC, 1 WBC detected"; "vessel 12.3% of the
analysed area") and adds one Observation per class: the number of objects
found (``valueInteger``) or the share of the image the mask covers (``%``).
The mask, boxes and DICOM SEG/SR stay with the service (``links`` of the result).
A restoration or translation result's conclusion says the image is SYNTHETIC and
what its hallucination checks found; the synthetic image stays with the service.
"""

from __future__ import annotations

import uuid
from typing import Any

LOINC_AI = "http://loinc.org"
MEDDX_SYSTEM = "https://meddx.example.org/fhir/CodeSystem/finding"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
NOT_A_FINDING = "Not a finding: the input is outside the model's training data, so this probability cannot be trusted."


def diagnostic_report(prediction: dict[str, Any], *, patient_pseudonym: str, study_id: str,
                      issued: str) -> dict[str, Any]:
    """A ``Bundle`` (collection) of one DiagnosticReport and its Observations, validated."""
    from fhir.resources.R4B.bundle import Bundle

    from meddx.trust.decide import REJECTED, plain_words

    report_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"meddx/report/{study_id}/{prediction['model_version']}"))
    subject = {"reference": f"Patient/{patient_pseudonym}", "display": f"pseudonym {patient_pseudonym}"}
    decision = prediction["decision"]
    words = plain_words(decision["decision"], decision["reason"], prediction.get("prediction"),
                        str(prediction.get("modality") or "image"))
    ood = prediction.get("ood") or {}
    flagged = bool(ood.get("flagged"))
    rejected = decision["decision"] == REJECTED
    observations = [] if rejected else _probabilities(prediction, report_id, subject, issued, flagged)
    if not rejected:
        observations += _findings(prediction, report_id, subject, issued)
    if ood and not rejected:
        observations.append(_ood_observation(prediction, ood, report_id, subject, issued))
    if rejected:
        conclusion = f"{words} No finding was made. Decision support only; not for primary diagnosis."
    elif flagged:
        conclusion = (f"Referred: the image is outside the model's training data, so the model's answer is not a "
                      f"finding. {words} {decision['reason']}. Decision support only; not for primary diagnosis.")
    elif isinstance(prediction.get("synthetic"), dict):
        from meddx.service.tasks import summary

        conclusion = (f"{decision['decision']}: {summary(prediction)}. {decision['reason']}. The image is SYNTHETIC "
                      "(computed, not acquired). Decision support only; not for primary diagnosis.")
    else:
        from meddx.service.tasks import summary

        found = summary(prediction)
        conclusion = (f"{decision['decision']}: {prediction['prediction']} "
                      + (f"({found}; " if found else "(")
                      + f"calibrated probability {max(prediction['calibrated_probabilities'].values()):.2f}). "
                      f"{decision['reason']}. Decision support only; not for primary diagnosis.")
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": report_id, "status": "cancelled" if rejected else "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"text": f"AI-assisted image {prediction.get('task') or 'classification'} ({prediction['model']})"},
        "subject": subject, "issued": issued,
        "performer": [{"display": f"meddx model {prediction['model']} version {prediction['model_version']}"}],
        "conclusion": conclusion,
    }
    if observations:
        report["result"] = [{"reference": f"Observation/{o['id']}"} for o in observations]
    if not rejected:
        report["conclusionCode"] = [{"coding": [{"system": MEDDX_SYSTEM, "code": decision["decision"],
                                                 "display": decision["decision"]}], "text": words}]
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": f"urn:uuid:{report_id}", "resource": report}]
              + [{"fullUrl": f"urn:uuid:{o['id']}", "resource": o} for o in observations]}
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)


def _probabilities(prediction: dict[str, Any], report_id: str, subject: dict[str, str], issued: str,
                   flagged: bool) -> list[dict[str, Any]]:
    """One Observation per class: its calibrated probability (with the OOD warning when flagged)."""
    uncertainty = prediction.get("uncertainty") or {}
    out = []
    for name, value in prediction["calibrated_probabilities"].items():
        notes = [{"text": f"Model {prediction['model']} {prediction['model_version']}; "
                          f"uncertainty ({uncertainty.get('method', 'none')}): predictive entropy "
                          f"{float(uncertainty.get('predictive_entropy', 0.0)):.3f} nats"}]
        if flagged:
            notes.append({"text": NOT_A_FINDING})
        out.append({
            "resourceType": "Observation", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{report_id}/{name}")),
            "status": "preliminary",
            "code": {"coding": [{"system": MEDDX_SYSTEM, "code": name.replace(" ", "-"), "display": name}],
                     "text": f"Calibrated probability of {name}"},
            "subject": subject, "issued": issued,
            "valueQuantity": {"value": round(float(value), 6), "unit": "probability",
                              "system": "http://unitsofmeasure.org", "code": "1"},
            "note": notes,
        })
    return out


def _findings(prediction: dict[str, Any], report_id: str, subject: dict[str, str], issued: str) -> list[dict[str, Any]]:
    """A segmentation or detection result's findings: objects per class, share of the image per mask class."""
    out = []
    note = [{"text": f"Model {prediction['model']} {prediction['model_version']} ({prediction.get('task')})"}]

    def observation(key: str, name: str, text: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{report_id}/{key}/{name}")),
                "status": "preliminary",
                "code": {"coding": [{"system": MEDDX_SYSTEM, "code": f"{key}-{name.replace(' ', '-')}",
                                     "display": text}], "text": text},
                "subject": subject, "issued": issued, **value, "note": note}

    for name, count in (prediction.get("counts") or {}).items():
        out.append(observation("count", name, f"Number of {name} detected", {"valueInteger": int(count)}))
    mask = prediction.get("mask") or {}
    for name in (mask.get("classes") or [])[1:]:
        share = float((mask.get("fraction") or {}).get(name, 0.0))
        out.append(observation("fraction", name, f"Share of the analysed area segmented as {name}",
                               {"valueQuantity": {"value": round(100 * share, 4), "unit": "%",
                                                  "system": "http://unitsofmeasure.org", "code": "%"}}))
    return out


def _ood_observation(prediction: dict[str, Any], ood: dict[str, Any], report_id: str, subject: dict[str, str],
                     issued: str) -> dict[str, Any]:
    """The OOD score against its threshold: interpretation H (outside the training data) or N."""
    flagged = bool(ood.get("flagged"))
    code = "H" if flagged else "N"
    return {
        "resourceType": "Observation", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{report_id}/ood")),
        "status": "preliminary",
        "code": {"coding": [{"system": MEDDX_SYSTEM, "code": "ood-score", "display": "Out-of-distribution score"}],
                 "text": f"Distance from the model's training data ({ood['method']})"},
        "subject": subject, "issued": issued,
        "valueQuantity": {"value": round(float(ood["score"]), 6), "unit": "score"},
        "referenceRange": [{"high": {"value": round(float(ood["threshold"]), 6), "unit": "score"},
                            "text": "scores above this are outside the model's training data"}],
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": code,
                                        "display": "High" if flagged else "Normal"}],
                            "text": "outside the model's training data: referred" if flagged
                            else "like the model's training data"}],
        "note": [{"text": f"Model {prediction['model']} {prediction['model_version']}"}],
    }
