"""Re-entry linking for the registry: learns what the scene's people look like and weighs newcomers against leavers.

The evidence itself (where and when, looks, one-to-one assignment) is `reentry`; this is its use on the registry's
state: which pairs the scene calibrates the looks with, which identities are newcomers and leavers each frame, and
when a newcomer's question is closed. It decides; the registry applies the links (tracks, merge, events).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from app.services.identity.geometry import GeometryGate
from app.services.identity.reentry import (
    AppearanceEvidence,
    LinkDecision,
    MotionEvidence,
    ReentryConfig,
    assign_links,
)
from app.services.identity.sightings import Group, TrackKey, unit_of
from app.services.identity.state import IdentityState, Leaver, TrackState, later_mean_ready


class ReentryLinker:
    """Looks and motion evidence of one task, and the links they support (``cfg``: `ReentryConfig`)."""

    def __init__(self, cfg: ReentryConfig, gate: GeometryGate) -> None:
        self.cfg = cfg
        self.appearance = AppearanceEvidence(cfg)
        self.motion = MotionEvidence(cfg, gate)

    def calibrate(
        self, groups: list[Group], tracks: Mapping[TrackKey, TrackState], identities: Mapping[int, IdentityState]
    ) -> None:
        """Learn, without labels, what "different people" and "the same person" look like in this scene:
        identities seen now in different places are different; one identity's means from two cameras are one
        person seen through two views."""
        need = self.cfg.min_samples
        per_gid: dict[int, int] = defaultdict(int)
        for g in groups:
            gids = {tracks[k].gid for k in g.keys}
            if len(gids) == 1:
                per_gid[gids.pop()] += 1
        means: dict[int, np.ndarray] = {}
        for gid, n in per_gid.items():
            ident = identities.get(gid)
            if ident is None:
                continue
            if n == 1 and ident.appearance.count >= need and (mean := ident.appearance.unit()) is not None:
                means[gid] = mean
            views = sorted((c, m.unit()) for c, m in ident.by_camera.items() if m.count >= need)
            for (ca, ma), (cb, mb) in itertools.combinations(views, 2):
                if ma is not None and mb is not None:
                    self.appearance.same.put((gid, ca, cb), float(ma @ mb))
            if ident.appearance.count - ident.early.count >= need and later_mean_ready(ident):
                later = unit_of(ident.appearance.total - ident.early.total)  # type: ignore[operator]
                first = ident.early.unit()
                if later is not None and first is not None:
                    self.appearance.same.put((gid, "later"), float(first @ later))
        self.appearance.different.observe(means)

    def log_odds(self, gone: IdentityState, new: IdentityState) -> float | None:
        """Evidence (log-odds) that identity ``new`` is identity ``gone`` come back; None when impossible."""
        if new.first_xy is None:
            return None
        leaver = Leaver.of(gone, self.cfg.min_samples)
        return self.pair_log_odds(leaver, new, self.motion.background(new.first_xy))

    def pair_log_odds(self, g: Leaver, n: IdentityState, background: float) -> float | None:
        cfg = self.cfg
        if g.gid == n.gid or g.last_s >= n.created_s or n.first_xy is None or g.exit is None:
            return None  # seen while the new one was already there: a different person
        score = self.motion.log_odds(g.exit, n.first_xy, n.first_xy_s, background)
        if score is None:
            return None
        if (
            g.looks is not None
            and n.appearance.count >= cfg.newcomer_min_samples
            and (b := n.appearance.unit()) is not None
        ):
            score += self.appearance.log_odds(float(g.looks @ b))  # 0 until calibrated
        return score

    def weigh(self, identities: Iterable[IdentityState], now_s: float) -> tuple[list[LinkDecision], set[int]]:
        """This frame's links of newcomers to people who left, and the newcomers still open (someone who left could
        still turn out to be them). A newcomer whose window has passed is closed here: weighed once more on the
        last-chance bar when that is on, then a new person for good."""
        cfg = self.cfg
        everyone = list(identities)
        tentative = []
        closing: set[int] = set()
        for ident in everyone:
            if ident.tentative_until is not None and now_s > ident.tentative_until:
                ident.tentative_until = None  # the question is closed: a new person, unless this last look links it
                if cfg.last_chance and ident.first_xy is not None:
                    closing.add(ident.gid)
                    tentative.append(ident)
            elif ident.tentative_until is not None and ident.first_xy is not None:
                tentative.append(ident)
        if not tentative:
            return [], set()
        # each leaver's exit and looks, each newcomer's background: once per frame, not once per pair
        gone = [Leaver.of(i, cfg.min_samples) for i in everyone if i.xy is not None and i.last_s < now_s]
        scores: dict[tuple[int, int], float] = {}
        for n in tentative:
            assert n.first_xy is not None
            background = self.motion.background(n.first_xy)
            for g in gone:
                s = self.pair_log_odds(g, n, background)
                if s is not None:
                    scores[(n.gid, g.gid)] = s
        still_open = {n for n, _ in scores if n not in closing}
        return assign_links(scores, cfg, frozenset(closing)), still_open
