"""The audit record: which model said what about which input, when, for whom; and feedback.

Both apps record through :class:`AuditLog` (a background writer; a prediction never waits on or
fails because of the database). See docs/audit.md for exactly what is stored.
"""

from __future__ import annotations

from serving.audit.config import AuditSettings, resolve
from serving.audit.recorder import AuditLog, Input, backend_name

__all__ = ["AuditLog", "AuditSettings", "Input", "backend_name", "resolve"]
