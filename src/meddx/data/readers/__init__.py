"""Readers for the formats clinics really have, behind one :func:`read` entry point."""

from meddx.data.readers._base import (
    Reader,
    find_reader,
    get_reader,
    list_readers,
    read,
    register_reader,
)

__all__ = ["Reader", "find_reader", "get_reader", "list_readers", "read", "register_reader"]
