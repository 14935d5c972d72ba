"""FHIR and HL7 v2 records full of identifiers, for the privacy tests."""

from __future__ import annotations

from typing import Any

MRN = "MRN-0001"


def make_bundle() -> dict[str, Any]:
    patient = {
        "resourceType": "Patient", "id": "pat-jane",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Jane Doe MRN-0001</div>"},
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                       "valueString": "Maidenname"}],
        "identifier": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
             "system": "urn:oid:1.2.3.4", "value": MRN},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"},
        ],
        "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Quinn"]}],
        "telecom": [{"system": "phone", "value": "+1-555-0100"}],
        "gender": "female",
        "birthDate": "1970-01-01",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                      "valueDateTime": "1970-01-01T07:30:00Z"}]},
        "address": [{"line": ["1 Main Street"], "city": "Springfield", "postalCode": "12345"}],
        "contact": [{"name": {"family": "Doe", "given": ["John"]}, "telecom": [{"value": "+1-555-0199"}]}],
    }
    observation = {
        "resourceType": "Observation", "id": "obs-1", "status": "final",
        "identifier": [{"system": "urn:lab", "value": "ACC-123"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "subject": {"reference": "Patient/pat-jane", "display": "Jane Doe"},
        "effectiveDateTime": "2023-01-15T10:15:00+01:00",
        "issued": "2023-01-15T12:00:00Z",
        "valueQuantity": {"value": 170, "unit": "cm"},
    }
    related = {
        "resourceType": "RelatedPerson", "id": "rp-1",
        "patient": {"reference": "urn:uuid:1f6e9a52-0000-4000-8000-0000000000aa"},
        "name": [{"family": "Doe", "given": ["John"]}], "telecom": [{"value": "+1-555-0199"}],
        "birthDate": "1968-05-05",
    }
    return {
        "resourceType": "Bundle", "id": "b1", "type": "collection", "timestamp": "2023-01-16T08:00:00Z",
        "entry": [
            {"fullUrl": "urn:uuid:1f6e9a52-0000-4000-8000-0000000000aa", "resource": patient},
            {"fullUrl": "http://example.org/fhir/Observation/obs-1", "resource": observation},
            {"fullUrl": "RelatedPerson/rp-1", "resource": related},
        ],
    }


FHIR_SECRETS = ("Jane", "Doe", "Quinn", "John", MRN, "123-45-6789", "+1-555-0100", "+1-555-0199", "1 Main Street",
           "Springfield", "12345", "Maidenname", "1970-01-01", "pat-jane", "ACC-123", "1968-05-05",
           "1f6e9a52-0000-4000-8000-0000000000aa")


HL7 = "\r".join([
    "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20230115101500||ADT^A01|MSG0001|P|2.5.1",
    "EVN|A01|20230115101500",
    f"PID|1|ALT-77|{MRN}^5^M10^HOSP^MR~999-88^^^SSA^SS||Doe^Jane^Quinn||19700101|F|||"
    "1 Main Street^^Springfield^ST^12345||555-0100|555-0101||||ACCT-9|123-45-6789",
    "NK1|1|Doe^John|FTH^Father|1 Main Street^^Springfield|555-0199",
    "PV1|1|I|W^1^1||||1234^House^Gregory||||||||||||VISIT-5",
    "OBX|1|NM|8302-2^Body height^LN||170|cm|||||F|||20230115101000",
]) + "\r"
