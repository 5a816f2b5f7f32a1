"""Which code a checkpoint's state belongs to.

A checkpoint pickles live objects — the camera trackers, the identity registry, what the detector and the crop
levels learnt. Pickle restores an object whose class has since gained or reordered fields without complaint, and
the task then fails frames later on a missing attribute (or, worse, runs on a shifted one). So the state travels
with a fingerprint of the code that made it, and a checkpoint of another version is refused before anything runs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
from pathlib import Path

STATE_MODULES = (
    "app.services.frame_processor",
    "app.services.tracking",
    "app.services.crop_photometry",
    "app.services.motion_gate",
    "app.services.detection_regions",
    "app.services.detector_scale",
    "app.services.still_objects",
    "app.services.reid",
    "app.services.identity",
)
"""Modules (a package: all of its modules) whose objects a checkpoint holds."""
THIRD_PARTY = ("boxmot",)
"""Packages whose objects it holds too (the trackers), by installed version."""


class CheckpointFormatError(ValueError):
    """A checkpoint this code cannot resume (written by another version); the message says what to do."""


@functools.cache
def state_format() -> str:
    """Fingerprint of the code that reads and writes checkpoint state (its sources and the trackers' version)."""
    digest = hashlib.sha256()
    for name in STATE_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):  # a package: every module in it
            files = sorted(f for folder in module.__path__ for f in Path(folder).glob("*.py"))
        else:
            files = [Path(module.__file__ or "")]
        for f in files:
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    for dist in THIRD_PARTY:
        digest.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
    return digest.hexdigest()[:16]
