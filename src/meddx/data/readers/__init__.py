"""Readers for the formats clinics really have, behind one :func:`read` entry point."""

from meddx.data.readers._base import (
    Reader,
    find_reader,
    get_reader,
    list_readers,
    read,
    register_reader,
)

# The strict DICOM series reader lives beside the built-ins but registers here, since the
# built-in list is loaded lazily; it is only chosen by name (reader="dicom_series").
from meddx.data.readers import series as _series  # noqa: E402,F401

__all__ = ["Reader", "find_reader", "get_reader", "list_readers", "read", "register_reader"]
