"""Settings of the cross-camera identity layer, as the registry takes them (`ReIdConfig.from_settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.services.identity.crossings import SwapConfig
from app.services.identity.geometry import GeometryConfig
from app.services.identity.reentry import LOOKS_PRIORS, ReentryConfig

if TYPE_CHECKING:
    from app.core.config import Settings


@dataclass(slots=True, frozen=True)
class ReIdConfig:
    """Identity thresholds; defaults and how they were chosen: docs/accuracy.md ("Tracking and identity")."""

    max_map_distance_m: float = 1.0
    max_speed_mps: float = 3.0
    match_threshold: float = 0.85
    """Re-appearance after ``lost_after_s``: minimum gallery similarity."""
    proximity_weight: float = 0.3
    appearance_weight: float = 0.5
    """Weight of appearance next to track continuity and map agreement."""
    switch_frames: int = 2
    """Frames in a row a track's group must point to another identity before the track follows it."""
    last_track_switch_frames: int = 0
    """The same for the last track of a person shown for over `registry.ESTABLISHED_S`, whose move would merge them away
    (0 or ≤ ``switch_frames``: as any track; the product's default is in Settings)."""
    lost_after_s: float = 2.0
    identity_ttl_s: float = 60.0
    gallery_size: int = 20
    gallery_min_quality: float = 0.5
    event_log_size: int = 1000
    camera_centring: bool = False
    """Compare appearance with each camera's running mean removed (`CameraCentring`; on in the product's
    settings, off here so constructed cases compare the vectors they give)."""
    reentry: ReentryConfig | None = None
    """Linking new identities to earlier ones (`app.services.identity.reentry`); None: off."""
    birth_radius_m: float = 0.0
    """A camera's brand-new track joins the person another camera sees within this of it
    (`IdentityRegistry._join_newcomers`); 0 or ≤ ``max_map_distance_m``: off."""
    looks_against_log_odds: float = -1.0
    """Learnt appearance evidence (log-odds, `AppearanceEvidence`; 0 until the scene is calibrated, so early on
    place and time decide) below this speaks against handing a new sighting to a known person: a camera's new
    track does not join the person nearby (``birth_radius_m``) nor continue one lost < ``lost_after_s`` ago
    (a stranger entering where someone walked out of a narrow view). ``-inf``: place and time alone decide."""
    swaps: SwapConfig | None = None
    """Undoing identity swaps of people who crossed, by their looks (`crossings`); None: off."""
    confirm_frames: int = 1
    """While someone who left could still turn out to be a new identity (re-entry linking weighs a candidate for
    it), it is shown (its tracks get an id in `assign`'s result, ``created`` is announced) only from the frame it
    has been seen in this many frames, unless linked before: a returner recognised within those frames, or a false
    detection living a frame or two, never shows an id of its own. An identity split off a person's track (the
    track's group went another way: people close together) is held so whoever left, as such splits are mostly
    undone within a frame or two. 1: shown at once (constructed cases); the product's default is in Settings."""
    continuation_doubt_mps: float = 0.0
    """A new sighting continues an identity lost < ``lost_after_s`` ago by a walk faster than this only when no other
    identity out of sight was last seen within ``continuation_doubt_radius_m`` of it (and closer): someone
    appearing right where another person walked out of view is at least as likely that person, turned back, as
    the one lost metres away who would have had to run. It then starts as a newcomer whom re-entry linking weighs
    against both, with the looks it gathers. 0: off (constructed cases); the product's default is in Settings."""
    continuation_doubt_radius_m: float = 0.7
    continuity_radius_m: float = 0.0
    """Sightings by different cameras whose tracks all carry one identity stay one person while their map
    positions agree within this (beyond ``max_map_distance_m``, which decides who is grouped afresh): a foot
    point off by a metre or two at a view's edge does not split the person into a new identity that is merged
    back frames later. 0: off (constructed cases); the product's default is in Settings."""

    def __post_init__(self) -> None:
        if self.switch_frames < 1 or self.confirm_frames < 1:
            raise ValueError("switch_frames and confirm_frames must be >= 1")
        if self.continuity_radius_m < 0:
            raise ValueError("continuity_radius_m must be >= 0")
        if self.continuation_doubt_mps < 0 or self.continuation_doubt_radius_m <= 0:
            raise ValueError("continuation_doubt_mps must be >= 0 and continuation_doubt_radius_m > 0")

    def geometry(self) -> GeometryConfig:
        return GeometryConfig(self.max_map_distance_m, self.max_speed_mps)

    @classmethod
    def from_settings(cls, s: Settings) -> ReIdConfig:
        return cls(
            max_map_distance_m=s.reid_max_map_distance_m,
            max_speed_mps=s.reid_max_speed_mps,
            match_threshold=s.reid_match_threshold,
            proximity_weight=s.reid_proximity_weight,
            appearance_weight=s.reid_appearance_weight,
            switch_frames=s.reid_switch_frames,
            last_track_switch_frames=s.reid_last_track_switch_frames,
            lost_after_s=s.reid_lost_after_s,
            identity_ttl_s=s.reid_identity_ttl_s,
            gallery_size=s.reid_gallery_size,
            gallery_min_quality=s.reid_gallery_min_quality,
            event_log_size=s.reid_event_log_size,
            camera_centring=s.reid_camera_centring,
            continuity_radius_m=s.reid_continuity_radius_m,
            birth_radius_m=s.reid_birth_radius_m,
            continuation_doubt_mps=s.reid_continuation_doubt_mps,
            continuation_doubt_radius_m=s.reid_continuation_doubt_radius_m,
            looks_against_log_odds=s.reid_looks_against_log_odds,
            swaps=SwapConfig(log_odds=s.reid_swap_log_odds) if s.reid_swap_log_odds > 0 else None,
            confirm_frames=s.reid_confirm_frames,
            reentry=ReentryConfig(
                window_s=s.reid_reentry_window_s,
                max_gap_s=s.reid_reentry_max_gap_s,
                link_log_odds=s.reid_reentry_link_log_odds,
                margin=s.reid_reentry_margin,
                closing_log_odds=s.reid_reentry_closing_log_odds,
                closing_margin=s.reid_reentry_closing_margin,
                looks_prior=looks_prior_for(s),
                looks_prior_pairs=s.reid_looks_prior_pairs,
            )
            if s.reid_reentry
            else None,
        )


def looks_prior_for(s: Settings) -> tuple[float, float, float] | None:
    """The starting calibration of the looks for the descriptor the settings make (camera-centred only: the
    priors were measured on centred descriptors)."""
    if s.reid_looks_prior_pairs <= 0 or not s.reid_camera_centring:
        return None
    return LOOKS_PRIORS.get("fused" if s.embedder == "auto" else s.embedder)
