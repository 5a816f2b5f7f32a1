"""Cross-camera identity (kept as the import path the pipeline uses); the parts live in `app.services.identity`."""

from app.services.identity import (
    IdentityEvent,
    IdentityEventKind,
    IdentityEventLog,
    IdentityRegistry,
    Observation,
    ReIdConfig,
)

__all__ = ["IdentityEvent", "IdentityEventKind", "IdentityEventLog", "IdentityRegistry", "Observation", "ReIdConfig"]
