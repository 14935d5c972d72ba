"""Tests of meddx.privacy: pseudonyms, DICOM de-identification, FHIR / HL7 v2 records, the CLI."""
