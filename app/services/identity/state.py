"""What the registry remembers of each camera track and each person (identity) between frames."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from app.services.identity.geometry import XY
from app.services.identity.reentry import AppearanceMean, Exit, walking_velocity
from app.services.identity.sightings import TrackKey

TRAIL_S = 1.5
"""Recent positions kept per identity, for its walking velocity when it leaves."""
EARLY_SAMPLES = 4
LATER_S = 4.0
"""An identity's first `EARLY_SAMPLES` looks against those from `LATER_S` on: a same-person pair over time."""


@dataclass(slots=True)
class TrackState:
    """A camera track: the identity it carries, and where its group has been pointing instead."""

    gid: int
    last_s: float
    pending_gid: int | None = None
    """Identity this track's person-group keeps pointing to instead of `gid` (``NEW``: a new one)."""
    pending_frames: int = 0


@dataclass(slots=True)
class IdentityState:
    """One person (global id): where and when last seen, their looks, and whether the id has gone out."""

    gid: int
    created_s: float
    last_s: float
    xy: XY | None = None
    xy_s: float = 0.0
    lost_reported: bool = False
    tracks: set[TrackKey] = field(default_factory=set)
    appearance: AppearanceMean = field(default_factory=AppearanceMean)
    tentative_until: float | None = None
    """Until then this new identity may still be linked to an earlier one (`reentry`)."""
    first_xy: XY | None = None
    first_xy_s: float = 0.0
    trail: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=64))
    """``(t, x, y)`` of the last `TRAIL_S` seconds."""
    recent: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=0))
    """The latest looks (``SwapConfig.recent`` of them), weighed apart from the settled rest after a crossing."""
    near: dict[int, float] = field(default_factory=dict)
    """Identities that came within ``SwapConfig.near_m`` of this one, and when last."""
    by_camera: dict[str, AppearanceMean] = field(default_factory=dict)
    """Appearance per camera: two cameras' means of one person calibrate what "the same" looks like."""
    early: AppearanceMean = field(default_factory=AppearanceMean)
    """The first samples, compared with the later ones (the same person, seconds later) for calibration."""
    early_s: float | None = None
    founder: TrackKey | None = None
    """The track that started it (named when it is announced); None: split off a known person's track."""
    frames: int = 0
    """Frames it has been seen in."""
    shown: bool = False
    """Announced: its id has gone out (`ReIdConfig.confirm_frames`)."""

    @property
    def split_off(self) -> bool:
        """Made for a track that left its person (the registry's `_settle`, `_one_per_camera`), not by a brand-new
        track."""
        return self.founder is None

    def exit(self) -> Exit | None:
        if self.xy is None:
            return None
        return Exit(self.xy, self.xy_s, walking_velocity(self.trail))


@dataclass(slots=True, frozen=True)
class Leaver:
    """What re-entry linking needs of an identity that is out of sight: when, where and how it left, its looks."""

    gid: int
    last_s: float
    exit: Exit | None
    looks: np.ndarray | None

    @classmethod
    def of(cls, ident: IdentityState, min_samples: int = 3) -> Leaver:
        looks = ident.appearance.unit() if ident.appearance.count >= min_samples else None
        return cls(ident.gid, ident.last_s, ident.exit(), looks)


def later_mean_ready(ident: IdentityState) -> bool:
    """Whether an identity has been seen long enough after its first looks for a "same person, later" pair."""
    return ident.early_s is not None and ident.last_s - ident.early_s >= LATER_S
