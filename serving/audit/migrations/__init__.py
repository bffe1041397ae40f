"""Alembic migrations of the audit database, shipped inside the package (run by ``migrate``)."""
