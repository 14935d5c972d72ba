"""A prediction as a FHIR R4 DiagnosticReport with its Observations, ready to post to an EHR.

Validated with the ``fhir.resources`` models (R4B, the R4-compatible release) before
it leaves the service. The patient is referenced by pseudonym only; the model and
its version are named in the report's ``performer`` display and in a device note.
"""

from __future__ import annotations

import uuid
from typing import Any

LOINC_AI = "http://loinc.org"
MEDDX_SYSTEM = "https://meddx.example.org/fhir/CodeSystem/finding"


def diagnostic_report(prediction: dict[str, Any], *, patient_pseudonym: str, study_id: str,
                      issued: str) -> dict[str, Any]:
    """A ``Bundle`` (collection) of one DiagnosticReport and one Observation per class, validated."""
    from fhir.resources.R4B.bundle import Bundle

    report_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"meddx/report/{study_id}/{prediction['model_version']}"))
    subject = {"reference": f"Patient/{patient_pseudonym}", "display": f"pseudonym {patient_pseudonym}"}
    observations = []
    for name, value in prediction["calibrated_probabilities"].items():
        obs_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{report_id}/{name}"))
        observations.append({
            "resourceType": "Observation", "id": obs_id, "status": "preliminary",
            "code": {"coding": [{"system": MEDDX_SYSTEM, "code": name.replace(" ", "-"), "display": name}],
                     "text": f"Calibrated probability of {name}"},
            "subject": subject, "issued": issued,
            "valueQuantity": {"value": round(float(value), 6), "unit": "probability",
                              "system": "http://unitsofmeasure.org", "code": "1"},
            "note": [{"text": f"Model {prediction['model']} {prediction['model_version']}; "
                              f"uncertainty ({prediction['uncertainty']['method']}): predictive entropy "
                              f"{prediction['uncertainty']['predictive_entropy']:.3f} nats"}],
        })
    decision = prediction["decision"]
    conclusion = (f"{decision['decision']}: {prediction['prediction']} "
                  f"(calibrated probability {max(prediction['calibrated_probabilities'].values()):.2f}). "
                  f"{decision['reason']}. Decision support only; not for primary diagnosis.")
    report = {
        "resourceType": "DiagnosticReport", "id": report_id, "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"text": f"AI-assisted image classification ({prediction['model']})"},
        "subject": subject, "issued": issued,
        "performer": [{"display": f"meddx model {prediction['model']} version {prediction['model_version']}"}],
        "result": [{"reference": f"Observation/{o['id']}"} for o in observations],
        "conclusion": conclusion,
        "conclusionCode": [{"coding": [{"system": MEDDX_SYSTEM, "code": decision["decision"],
                                        "display": decision["decision"]}]}],
    }
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": f"urn:uuid:{report_id}", "resource": report}]
              + [{"fullUrl": f"urn:uuid:{o['id']}", "resource": o} for o in observations]}
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)
