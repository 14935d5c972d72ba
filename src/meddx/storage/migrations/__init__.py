"""Alembic migrations of the service database (run them with :func:`meddx.storage.db.upgrade`).

A package only so that the migration scripts ship with meddx; Alembic loads
``env.py`` and ``versions/*.py`` by path, nothing imports them.
"""
