"""Global identities across cameras: geometry gates, appearance galleries, one-to-one assignment, events."""

from app.services.identity.config import ReIdConfig
from app.services.identity.events import IdentityEvent, IdentityEventKind, IdentityEventLog
from app.services.identity.registry import IdentityRegistry
from app.services.identity.sightings import Observation

__all__ = ["IdentityEvent", "IdentityEventKind", "IdentityEventLog", "IdentityRegistry", "Observation", "ReIdConfig"]
