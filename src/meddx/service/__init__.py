"""The clinician service: REST API and web page over the inference, trust, privacy and storage layers."""
