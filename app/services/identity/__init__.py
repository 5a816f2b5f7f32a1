"""Global identities across cameras: geometry gates, appearance galleries, one-to-one assignment, events."""

from app.services.identity.events import IdentityEvent, IdentityEventKind, IdentityEventLog
from app.services.identity.registry import IdentityRegistry, Observation, ReIdConfig

__all__ = ["IdentityEvent", "IdentityEventKind", "IdentityEventLog", "IdentityRegistry", "Observation", "ReIdConfig"]
