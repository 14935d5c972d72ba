"""Ingest: the data catalogue, fetching (mirror → cache → download), readers and splits."""

from meddx.data.readers import list_readers, read
from meddx.data.sample import (
    ImageSample,
    LabelledImagesSample,
    RecordSample,
    Sample,
    SignalSample,
    TableSample,
)

__all__ = [
    "ImageSample",
    "LabelledImagesSample",
    "RecordSample",
    "Sample",
    "SignalSample",
    "TableSample",
    "list_readers",
    "read",
]
