"""Cross-camera identity: turns per-camera track ids into global ids.

Each global frame, with every camera at once:

1. **Who stands together now.** Observations of different cameras whose map positions agree within
   ``max_map_distance_m`` (and whose cameras overlap) form one group, at most one per camera, closest pairs
   first. With exact homographies the same person's foot points from two cameras lie ~0.1 m apart, while two
   people rarely stand closer than 0.5 m, so grouping by position is the strongest cross-camera cue. Groups
   whose tracks all already carry one identity stay together within ``continuity_radius_m`` (a foot point a
   metre or two off at a view's edge must not split a person the cameras already agreed on), and a camera's
   brand-new tracks join the person other cameras see within ``birth_radius_m`` (a camera starting to see them).
2. **Which identity each group is**, one-to-one over all groups (Hungarian): the identity most of its tracks
   already carry (track continuity), that was last seen within walking reach (travel-time gate), and that
   looks alike (FAISS gallery, weight ``appearance_weight``); an identity no camera has seen for
   ``lost_after_s`` can come back only on appearance (``match_threshold``) within walking reach.
3. **Tracks follow their group, with hysteresis.** A new track takes its group's identity at once (a new one
   when none fits); a bound track moves only after its group has pointed elsewhere for ``switch_frames``
   frames in a row — a tracker id switch, or two ids found to be one person: an identity whose last tracks
   all moved to another is merged into it. A camera never shows one identity on two tracks.

Every decision that matters to a person-level consumer is an `IdentityEvent` in a bounded log. Around it: its
settings (`config`), what a frame brings and who stands together (`sightings`), what it remembers of tracks and
people (`state`), people who come back (`linking`, on `reentry`'s evidence) and people who crossed (`crossings`).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict, deque
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from app.models.base import FloatArray
from app.services.identity.assignment import assign_max
from app.services.identity.config import ReIdConfig
from app.services.identity.crossings import Looks, SwapConfig, pick_swaps, swap_gain
from app.services.identity.events import IdentityEvent, IdentityEventKind, IdentityEventLog
from app.services.identity.gallery import AppearanceGallery, FaissGallery
from app.services.identity.geometry import XY, GeometryGate
from app.services.identity.linking import ReentryLinker
from app.services.identity.reentry import AppearanceEvidence, AppearanceMean, ReentryConfig
from app.services.identity.scene_adaptation import CameraCentring
from app.services.identity.sightings import Group, Observation, TrackKey, group_by_place, looks_of, occluded, unit_of
from app.services.identity.state import EARLY_SAMPLES, TRAIL_S, IdentityState, TrackState

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.services.environments import EnvironmentSpec

TRACK_FORGET_S = 10.0
"""A track unseen this long is gone (trackers drop lost tracks after about a second)."""
NEW = -1
"""Pending target meaning "a new identity"."""
ESTABLISHED_S = 2.0
"""A person shown for this long is not a duplicate that a camera's first sightings made (those are merged within a
second or two of appearing): their last track needs ``last_track_switch_frames`` to leave them."""


class IdentityRegistry:
    """Global identities of one processing task. Call `assign` once per global frame, with all its cameras."""

    def __init__(
        self,
        dim: int,
        config: ReIdConfig | None = None,
        overlaps: set[frozenset[str]] | None = None,
        gallery: AppearanceGallery | None = None,
    ) -> None:
        self.config = config or ReIdConfig()
        self.geometry = GeometryGate(self.config.geometry(), overlaps)
        self.gallery: AppearanceGallery = gallery or FaissGallery(dim, self.config.gallery_size)
        self.events = IdentityEventLog(self.config.event_log_size)
        self._decided: list[IdentityEvent] = []
        """This frame's decisions, published at its end (`_publish`): events about ids nobody was shown are
        withheld or retold."""
        self._show_now: set[int] = set()
        """Held identities that someone shown was merged into this frame: they are shown at its end."""
        self._gone_unseen: set[int] = set()
        """Identities merged away or forgotten this frame that were never shown."""
        self._open: set[int] = set()
        """New identities that someone who left could still turn out to be (`_link_reentries`, this frame)."""
        self._next_gid = itertools.count(1)
        self._identities: dict[int, IdentityState] = {}
        self._tracks: dict[TrackKey, TrackState] = {}
        self._left_for: dict[int, int] = {}
        self.total_identities = 0
        self.centring = CameraCentring() if self.config.camera_centring else None
        evidence = self.config.reentry or ReentryConfig()  # its defaults when linking is off: looks still count
        self.linker = ReentryLinker(evidence, self.geometry)
        self.reentries = 0
        """Identities linked to an earlier one (a person who came back)."""
        self.swaps_undone = 0
        """Pairs of identities given back to each other after people crossed (`crossings`)."""

    @classmethod
    def from_settings(
        cls, settings: Settings, dim: int, environment: EnvironmentSpec | None = None
    ) -> IdentityRegistry:
        overlaps = set(environment.overlaps) if environment is not None else None
        config = ReIdConfig.from_settings(settings)
        if config.reentry is not None and environment is not None:
            from app.services.homography import seen_ground_area_m2

            area = seen_ground_area_m2(environment)
            if area > 0:
                config = replace(config, reentry=replace(config.reentry, scene_area_m2=max(area, 25.0)))
        return cls(dim, config, overlaps)

    # -- public ---------------------------------------------------------------------------------
    @property
    def active_identities(self) -> int:
        return len(self._identities)

    @property
    def appearance_evidence(self) -> AppearanceEvidence:
        """What the scene's people look like, learnt as the task runs (`ReentryLinker.calibrate`)."""
        return self.linker.appearance

    def position(self, global_id: int) -> tuple[XY, float] | None:
        """Where an identity was last seen on the map, fused over the cameras that saw it, and when."""
        ident = self._identities.get(global_id)
        return None if ident is None or ident.xy is None else (ident.xy, ident.xy_s)

    def needs_looks(self, camera_id: str, track_id: int) -> bool:
        """Whether a track's person still wants appearance samples: a track not placed yet, or one whose identity
        is new (re-entry linking may still weigh it) or has fewer looks than re-entry needs."""
        t = self._tracks.get((camera_id, track_id))
        ident = None if t is None else self._identities.get(t.gid)
        if ident is None:
            return True
        return ident.tentative_until is not None or ident.appearance.count < self.linker.cfg.min_samples

    def drain_events(self) -> list[IdentityEvent]:
        """Identity events since the last call (for publishing)."""
        return self.events.drain()

    def forget_track(self, camera_id: str, track_id: int) -> None:
        key = (camera_id, track_id)
        track = self._tracks.pop(key, None)
        if track is not None and track.gid in self._identities:
            self._identities[track.gid].tracks.discard(key)

    def discard_track(self, camera_id: str, track_id: int, now_s: float) -> None:
        """A track that turned out not to be a person (a still object, `StillObjects`): forgotten, and its identity
        with it when no other track carries it — nobody to continue or to link a returner to. An id that was shown
        is reported lost (with this frame's decisions, at the next `assign`)."""
        track = self._tracks.get((camera_id, track_id))
        if track is None:
            return
        self.forget_track(camera_id, track_id)
        ident = self._identities.get(track.gid)
        if ident is None or ident.tracks:
            return
        if ident.shown and not ident.lost_reported:
            self._emit(IdentityEvent(IdentityEventKind.LOST, ident.gid, now_s))
        if not ident.shown:
            self._gone_unseen.add(ident.gid)
        self.gallery.remove(ident.gid)
        del self._identities[ident.gid]

    def assign(self, observations: list[Observation], now_s: float) -> list[int | None]:
        """Global id for each observation (same order), updating galleries and events; None while the person is
        new and not shown yet (`ReIdConfig.confirm_frames`): report that track without an id, or not at all."""
        keys = [(o.camera_id, o.track_id) for o in observations]
        if len(set(keys)) != len(keys):
            raise ValueError("a track appears twice in one frame's observations")
        observations = [self._adapted(o) for o in observations]
        groups = self._join_newcomers(self._keep_together(group_by_place(observations, self.geometry)), now_s)
        self._associate(groups, now_s)
        for g in groups:
            self._settle(g, now_s)
        self._one_per_camera(groups, now_s)
        self._merge_emptied(now_s)
        self._observe(groups, now_s)
        if self.config.swaps is not None:
            self._undo_swaps(self.config.swaps, groups, now_s)
        if self.config.reentry is not None:
            self.linker.calibrate(groups, self._tracks, self._identities)
            self._link_reentries(now_s)
        self._prune(now_s)
        gids = [self._tracks[k].gid for k in keys]
        self._publish(gids, now_s)
        return [g if self._identities[g].shown else None for g in gids]

    def _adapted(self, o: Observation) -> Observation:
        """The observation with its appearance centred on its camera's rendering (`CameraCentring`)."""
        if o.embedding is None or self.centring is None:
            return o
        self.centring.observe(o.camera_id, o.embedding)
        return replace(o, embedding=self.centring.adapt(o.camera_id, o.embedding))

    # -- who stands together now ----------------------------------------------------------------
    def _keep_together(self, groups: list[Group]) -> list[Group]:
        """Join groups whose bound tracks all carry the same single identity, seen by disjoint cameras that may
        co-observe, whose positions agree within ``continuity_radius_m`` (track continuity outweighs a foot point
        that is a little off)."""
        radius = self.config.continuity_radius_m
        if radius <= self.config.max_map_distance_m or len(groups) < 2:
            return groups
        by_gid: dict[int, list[Group]] = defaultdict(list)
        for g in groups:
            if (gid := self._sole_identity(g)) is not None:
                by_gid[gid].append(g)
        out = list(groups)
        for split in by_gid.values():
            while len(split) > 1:
                a, b = split[0], split[1]
                cams_a, cams_b = {o.camera_id for o in a.members}, {o.camera_id for o in b.members}
                xa, xb = a.xy, b.xy
                if (
                    cams_a.isdisjoint(cams_b)
                    and all(self.geometry.may_co_observe(p, q) for p in cams_a for q in cams_b)
                    and xa is not None
                    and xb is not None
                    and math.dist(xa, xb) <= radius
                ):
                    joined = Group(a.members + b.members)
                    out = [g for g in out if g is not a and g is not b] + [joined]
                    split = [joined, *split[2:]]
                else:
                    split = split[1:]  # the first stays apart; the rest may still join one another
        return out

    def _sole_identity(self, g: Group) -> int | None:
        """The identity all of the group's bound tracks carry, if they carry exactly one (new tracks aside)."""
        bound = {self._tracks[k].gid for k in g.keys if k in self._tracks}
        return bound.pop() if len(bound) == 1 else None

    def _join_newcomers(self, groups: list[Group], now_s: float) -> list[Group]:
        """A group of brand-new tracks joins the nearest person whom other cameras see within ``birth_radius_m``
        of it now, when none of its cameras shows that person this frame and appearance is not against it: a
        camera starting to see someone (its first foot point a metre or so off, at the edge of its view) is that
        person, not a newcomer to be merged back frames later. Nobody within reach: a new person. A newcomer
        still held unshown (`confirm_frames`) is as new: when two cameras start seeing one person a frame apart,
        the later sighting joins the person the first one made rather than showing a second id."""
        radius = self.config.birth_radius_m
        if radius <= self.config.max_map_distance_m or len(groups) < 2:
            return groups
        shown_by: dict[int, set[str]] = defaultdict(set)  # identity → cameras with a track of it this frame
        for g in groups:
            for k in g.keys:
                if k in self._tracks:
                    shown_by[self._tracks[k].gid].add(k[0])
        people: list[tuple[Group, int, XY]] = []  # groups of bound tracks that all carry one identity
        for g in groups:
            gid = self._sole_identity(g)
            if gid is not None and all(k in self._tracks for k in g.keys) and (xy := g.xy) is not None:
                people.append((g, gid, xy))
        out = list(groups)
        for g in groups:
            xy = g.xy
            held = self._unshown_of(g)
            brand_new = not any(k in self._tracks for k in g.keys)
            if xy is None or not (brand_new or held is not None):
                continue
            if all(x is not g for x in out):
                continue  # a held newcomer whom a brand-new track already joined stays with it
            cams = {o.camera_id for o in g.members}
            near = [
                (math.dist(xy, pxy), i)
                for i, (pg, gid, pxy) in enumerate(people)
                if gid != held
                and (held is None or self._identities[gid].shown)
                and cams.isdisjoint(shown_by[gid])
                and math.dist(xy, pxy) <= radius
                and all(self.geometry.may_co_observe(a, o.camera_id) for a in cams for o in pg.members)
                and self._looks_alike(g, gid)
            ]
            if not near:
                continue
            i = min(near)[1]
            pg, gid, pxy = people[i]
            joined = Group(pg.members + g.members)
            out = [x for x in out if x is not pg and x is not g] + [joined]
            people[i] = (joined, gid, pxy)
            shown_by[gid] |= cams
            if held is not None:
                for k in g.keys:  # nobody saw the held id: its tracks are this person's (merged when emptied)
                    self._move(k, gid, now_s)
                people = [p for p in people if p[1] != held]
        return out

    def _unshown_of(self, g: Group) -> int | None:
        """The identity of a group whose tracks all hold one identity nobody was shown yet, and only they hold
        it (`confirm_frames`): such a newcomer may still join a person nearby as a brand-new track would."""
        if not g.keys or any(k not in self._tracks for k in g.keys):
            return None
        gid = self._sole_identity(g)
        if gid is None:
            return None
        ident = self._identities[gid]
        return gid if not ident.shown and ident.tracks <= set(g.keys) else None

    def _looks_alike(self, g: Group, gid: int) -> bool:
        """Whether the scene's learnt appearance evidence is not against the group's sightings being identity
        ``gid`` (``looks_against_log_odds``): a partial box at a view's edge or a stranger passing close by looks
        unlike the person and stays apart."""
        return self._looks_log_odds(looks_of(g), self._identities[gid]) >= self.config.looks_against_log_odds

    def _looks_log_odds(self, looks: np.ndarray | None, ident: IdentityState) -> float:
        """Appearance evidence (`AppearanceEvidence`) that sightings with mean unit descriptor ``looks`` are
        ``ident``; 0 when either side has no looks or the scene's looks are not calibrated yet."""
        mean = ident.appearance.unit()
        if looks is None or mean is None:
            return 0.0
        return self.linker.appearance.log_odds(float(looks @ mean))

    # -- which identity each group is -----------------------------------------------------------
    def _associate(self, groups: list[Group], now_s: float) -> None:
        """One-to-one (Hungarian) groups ↔ identities; `target` of each group is set (None: none fits)."""
        cand = list(self._identities.values())
        if not cand or not groups:
            return
        sims = self._appearance(groups, [c.gid for c in cand])
        age_rank = {ident.gid: r for r, ident in enumerate(sorted(cand, key=lambda i: (i.created_s, i.gid)))}
        score = np.full((len(groups), len(cand)), -np.inf)
        present = {self._tracks[k].gid for g in groups for k in g.keys if k in self._tracks}
        out_of_sight = [i for i in cand if i.gid not in present and i.xy is not None]
        for r, g in enumerate(groups):
            votes: dict[int, int] = defaultdict(int)
            for k in g.keys:
                t = self._tracks.get(k)
                if t is not None:
                    votes[t.gid] += 1
            xy = g.xy
            looks = looks_of(g)
            for c, ident in enumerate(cand):
                vote = votes.get(ident.gid, 0) / len(g.members)
                s = self._fit(ident, vote, xy, sims[r, c], now_s, looks, out_of_sight)
                if s is not None:
                    # among equal fits the older identity wins (it is the one people have seen longer)
                    score[r, c] = s + 1e-3 * (1.0 - age_rank[ident.gid] / len(cand))
        for r, c in assign_max(score):
            groups[r].target = cand[c].gid

    def _fit(
        self,
        ident: IdentityState,
        vote: float,
        xy: XY | None,
        sim: float,
        now_s: float,
        looks: np.ndarray | None,
        out_of_sight: list[IdentityState],
    ) -> float | None:
        """How well a group fits an identity, or None when a rule forbids it.

        ``vote``: share of the group's tracks already bound to the identity (track continuity). Otherwise the
        identity must have been seen recently (``lost_after_s``) where the group could have walked from, with
        ``looks`` (the group's mean descriptor, `looks_of`) not against it (``looks_against_log_odds``) and no
        other identity in ``out_of_sight`` closer than a fast walk would take (`_doubted`), or — a person coming
        back after leaving every view — within walking reach and alike in appearance (``match_threshold``).
        """
        cfg = self.config
        appearance = cfg.appearance_weight * sim
        located = xy is not None and ident.xy is not None
        reach = self.geometry.reachable(ident.xy, ident.xy_s, xy, now_s) if located else 0.0
        if vote > 0:
            return vote + (reach or 0.0) + appearance
        if reach is None:
            return None  # nobody walks that fast
        if located and now_s - ident.last_s <= cfg.lost_after_s:
            if self._looks_log_odds(looks, ident) < cfg.looks_against_log_odds:
                return None  # someone else where the person just was: looks say so once the scene is calibrated
            if self._doubted(ident, xy, now_s, out_of_sight):
                return None  # a run from there while someone else left right here: re-entry linking weighs both
            return reach + appearance  # found again where the person just was
        if sim >= cfg.match_threshold:
            return cfg.proximity_weight * reach + appearance
        return None

    def _doubted(self, ident: IdentityState, xy: XY | None, now_s: float, out_of_sight: list[IdentityState]) -> bool:
        """Whether continuing ``ident``, lost < ``lost_after_s`` ago, at ``xy`` is doubted: it would take a walk
        faster than ``continuation_doubt_mps`` (beyond the map's same-spot tolerance) while another identity out of
        sight was last seen within ``continuation_doubt_radius_m`` of ``xy``."""
        cfg = self.config
        if cfg.continuation_doubt_mps <= 0 or xy is None or ident.xy is None:
            return False
        d = math.dist(ident.xy, xy)
        if d <= self.geometry.reach_m(now_s - ident.xy_s, cfg.continuation_doubt_mps):
            return False
        near = min(cfg.continuation_doubt_radius_m, d)
        return any(o is not ident and o.xy is not None and math.dist(o.xy, xy) <= near for o in out_of_sight)

    def _appearance(self, groups: list[Group], gids: list[int]) -> np.ndarray:
        """Mean similarity of a group's current embeddings to each identity's gallery (0 without any)."""
        sims = np.zeros((len(groups), len(gids)), np.float64)
        rows: list[int] = []
        vecs: list[FloatArray] = []
        for r, g in enumerate(groups):
            for o in g.members:
                if o.embedding is not None:
                    rows.append(r)
                    vecs.append(o.embedding)
        if not vecs:
            return sims
        per = self.gallery.similarity(np.stack(vecs).astype(np.float32), gids)
        counts = np.zeros(len(groups))
        for r, row in zip(rows, per, strict=True):
            sims[r] += row
            counts[r] += 1
        return sims / np.maximum(counts, 1)[:, None]

    # -- binding tracks, with hysteresis --------------------------------------------------------
    def _settle(self, g: Group, now_s: float) -> None:
        """New tracks join their group's identity at once; a bound track follows a different identity only
        after its group has pointed there for ``switch_frames`` frames in a row."""
        want = NEW if g.target is None else g.target
        new = [o for o, k in zip(g.members, g.keys, strict=True) if k not in self._tracks]
        founder = new[0] if new and g.target is None else None
        if founder is not None:
            g.target = self._create(now_s, founder)
        for o, k in zip(g.members, g.keys, strict=True):
            t = self._tracks.get(k)
            if t is None:
                assert g.target is not None
                self._bind(k, g.target, now_s)
                if o is not founder:
                    self._emit(IdentityEvent(IdentityEventKind.MATCHED, g.target, now_s, o.camera_id, o.track_id))
                continue
            if want == t.gid:
                t.pending_gid, t.pending_frames = None, 0
                continue
            if t.pending_gid == want:
                t.pending_frames += 1
            else:
                t.pending_gid, t.pending_frames = want, 1
            if t.pending_frames >= self._switch_frames(t.gid, k, now_s):
                if g.target is None:  # one new identity for the whole group
                    g.target = self._create(now_s, None)
                self._move(k, g.target, now_s)

    def _switch_frames(self, gid: int, key: TrackKey, now_s: float) -> int:
        """Frames a track's group must point elsewhere before the track follows: longer for the last track of a
        person shown for a while (`ESTABLISHED_S`), whose move merges that person away — two people walking
        side by side, one of them seen by a single camera, fall into one group for a frame or two."""
        ident = self._identities[gid]
        if ident.shown and ident.tracks == {key} and now_s - ident.created_s >= ESTABLISHED_S:
            return max(self.config.switch_frames, self.config.last_track_switch_frames)
        return self.config.switch_frames

    def _move(self, key: TrackKey, gid: int, now_s: float) -> None:
        old = self._tracks[key].gid
        self._bind(key, gid, now_s)
        self._emit(IdentityEvent(IdentityEventKind.MOVED, gid, now_s, key[0], key[1], merged_id=old))
        self._left_for[old] = gid

    def _merge_emptied(self, now_s: float) -> None:
        """An identity whose last tracks all moved to another one this frame was that person: merge."""
        for old, gid in self._left_for.items():
            seen = {old}
            while gid not in self._identities and gid in self._left_for and gid not in seen:
                seen.add(gid)
                gid = self._left_for[gid]  # that one merged on in turn
            src = self._identities.get(old)
            if src is not None and not src.tracks and gid in self._identities and gid != old:
                self._merge(old, gid, now_s)
        self._left_for.clear()

    def _one_per_camera(self, groups: list[Group], now_s: float) -> None:
        """A camera shows a person once: a track still holding an identity (hysteresis) that its group gave
        to another track of the same camera yields at once."""
        owner: dict[tuple[str, int], TrackKey] = {}
        for g in groups:
            for k in g.keys:
                if g.target is not None and self._tracks[k].gid == g.target:
                    owner[(k[0], g.target)] = k
        for g in groups:
            for k in g.keys:
                t = self._tracks[k]
                holder = owner.get((k[0], t.gid))
                if holder is not None and holder != k:
                    self._move(k, g.target if g.target not in (None, t.gid) else self._create(now_s, None), now_s)

    def _merge(self, source: int, into: int, now_s: float, score: float | None = None) -> None:
        """`source` lost its last track to `into`: they were one person (a `merged` event when ``source`` had been
        shown; ``into`` is then shown too: it is someone people saw)."""
        src = self._identities.pop(source)
        dst = self._identities[into]
        if not src.shown:
            self._gone_unseen.add(source)
        dst.created_s = min(dst.created_s, src.created_s)
        dst.appearance.absorb(src.appearance)
        for cam, mean in src.by_camera.items():
            dst.by_camera.setdefault(cam, AppearanceMean()).absorb(mean)
        dst.trail = deque(sorted([*dst.trail, *src.trail]), maxlen=dst.trail.maxlen)
        if src.last_s >= dst.last_s:
            dst.last_s, dst.lost_reported = src.last_s, src.lost_reported
        if src.xy is not None and src.xy_s >= dst.xy_s:
            dst.xy, dst.xy_s = src.xy, src.xy_s
        self.gallery.merge(source, into)
        if src.shown:
            self._show_now.add(into)
            self._emit(IdentityEvent(IdentityEventKind.MERGED, into, now_s, merged_id=source, score=score))

    # -- announcing -----------------------------------------------------------------------------
    def _emit(self, event: IdentityEvent) -> None:
        self._decided.append(event)

    def _publish(self, gids: list[int], now_s: float) -> None:
        """Decide who is shown from this frame on, then hand out the frame's decisions.

        A new identity is held while someone who left could still turn out to be them, for at most
        ``confirm_frames`` − 1 frames (nobody has left yet, or re-entry linking is off: shown at once). Ids nobody
        was shown stay untold; a newly shown identity is announced ``created`` (by the track that started it) with
        a ``matched`` event for each further track it holds; a track that left an untold id for a shown one is
        news of a ``matched`` track.
        """
        for gid in set(gids):
            self._identities[gid].frames += 1
        newly = []
        for gid in dict.fromkeys([*gids, *sorted(self._show_now)]):
            ident = self._identities.get(gid)
            if ident is not None and not ident.shown and (
                ident.frames >= self.config.confirm_frames
                or gid in self._show_now
                or (gid not in self._open and not ident.split_off)
            ):
                ident.shown = True
                newly.append(ident)
        fresh = {i.gid for i in newly}
        for ident in newly:
            self.total_identities += 1
            founder = ident.founder if ident.founder in ident.tracks else None
            cam, track = founder if founder is not None else (None, None)
            self.events.emit(IdentityEvent(IdentityEventKind.CREATED, ident.gid, now_s, cam, track))
            moved = [e for e in self._decided if e.kind is IdentityEventKind.MOVED and e.global_id == ident.gid]
            retold = {(e.camera_id, e.track_id) for e in moved if self._told(e.merged_id)}
            for key in sorted(ident.tracks - retold - {founder}):
                self.events.emit(IdentityEvent(IdentityEventKind.MATCHED, ident.gid, now_s, *key))
        for ev in self._decided:
            if not self._told(ev.global_id) or (ev.global_id in fresh and ev.kind is IdentityEventKind.MATCHED):
                continue
            if ev.kind is IdentityEventKind.MOVED and not self._told(ev.merged_id):
                if ev.global_id in fresh:
                    continue  # the announcement named the track
                ev = replace(ev, kind=IdentityEventKind.MATCHED, merged_id=None)
            self.events.emit(ev)
        self._decided.clear()
        self._show_now.clear()
        self._gone_unseen.clear()
        self._open.clear()

    def _told(self, gid: int | None) -> bool:
        """Whether anyone was shown ``gid`` (an identity gone this frame was, unless it went unseen)."""
        if gid is None:
            return False
        ident = self._identities.get(gid)
        return ident.shown if ident is not None else gid not in self._gone_unseen

    # -- bookkeeping ----------------------------------------------------------------------------
    def _create(self, now_s: float, first: Observation | None) -> int:
        gid = next(self._next_gid)
        window = self.config.reentry.window_s if self.config.reentry is not None else None
        recent: deque[np.ndarray] = deque(maxlen=self.config.swaps.recent if self.config.swaps is not None else 0)
        self._identities[gid] = IdentityState(
            gid, now_s, now_s, tentative_until=None if window is None else now_s + window, recent=recent,
            founder=(first.camera_id, first.track_id) if first is not None else None,
        )
        return gid  # announced by `_publish` once shown

    def _bind(self, key: TrackKey, gid: int, now_s: float) -> None:
        old = self._tracks.get(key)
        if old is not None and old.gid in self._identities:
            self._identities[old.gid].tracks.discard(key)
        self._tracks[key] = TrackState(gid, now_s)
        self._identities[gid].tracks.add(key)

    def _observe(self, groups: list[Group], now_s: float) -> None:
        cfg = self.config
        hidden = occluded([o for g in groups for o in g.members])
        for g in groups:
            xy = g.xy
            if g.target is not None and xy is not None and g.target in self._identities:
                ident = self._identities[g.target]
                ident.xy, ident.xy_s = xy, now_s
                ident.trail.append((now_s, xy[0], xy[1]))
                while ident.trail and ident.trail[0][0] < now_s - TRAIL_S:
                    ident.trail.popleft()
                if ident.first_xy is None:
                    ident.first_xy, ident.first_xy_s = xy, now_s
                    self.linker.motion.born(xy)
            for o, k in zip(g.members, g.keys, strict=True):
                t = self._tracks[k]
                t.last_s = now_s
                ident = self._identities[t.gid]
                ident.last_s = now_s
                ident.lost_reported = False
                if o.embedding is not None and o.quality >= cfg.gallery_min_quality and k not in hidden:
                    self.gallery.add(t.gid, o.embedding, o.quality, now_s)
                    ident.appearance.add(o.embedding)
                    if cfg.swaps is not None:
                        ident.recent.append(np.asarray(o.embedding, np.float64))
                    ident.by_camera.setdefault(o.camera_id, AppearanceMean()).add(o.embedding)
                    if ident.early.count < EARLY_SAMPLES:
                        ident.early.add(o.embedding)
                        ident.early_s = now_s

    # -- people who crossed ----------------------------------------------------------------------
    def _undo_swaps(self, cfg: SwapConfig, groups: list[Group], now_s: float) -> None:
        """Two identities that came close and now each follow someone who looks like the other swap back
        (`crossings`): their tracks, recent looks and positions change hands."""
        here = [(g.target, xy) for g in groups if g.target in self._identities and (xy := g.xy) is not None]
        for ident in self._identities.values():
            ident.near = {g: t for g, t in ident.near.items() if now_s - t <= cfg.window_s}
        for (a, pa), (b, pb) in itertools.combinations(here, 2):
            if a != b and math.dist(pa, pb) <= cfg.near_m:
                self._identities[a].near[b] = self._identities[b].near[a] = now_s
        looks: dict[int, Looks] = {}
        for gid, _ in here:
            ident = self._identities[gid]
            total = ident.appearance.total
            if ident.near and len(ident.recent) == cfg.recent and ident.appearance.count >= 2 * cfg.recent:
                assert total is not None
                recent = np.sum(ident.recent, axis=0)
                r, settled = unit_of(recent), unit_of(total - recent)
                if r is not None and settled is not None:
                    looks[gid] = Looks(r, settled)
        gains = {
            (a, b): swap_gain(looks[a], looks[b], self.linker.appearance.log_odds)
            for a in looks
            for b in self._identities[a].near
            if a < b and b in looks
        }
        for a, b in pick_swaps(gains, cfg.log_odds):
            self._swap(a, b, now_s, gains[(a, b)])

    def _swap(self, a: int, b: int, now_s: float, score: float) -> None:
        """Identities ``a`` and ``b`` exchange their tracks (a `MOVED` event each, with the swap's log-odds) and
        what those tracks brought since the crossing: recent looks, position and trail."""
        ia, ib = self._identities[a], self._identities[b]
        ta, tb = list(ia.tracks), list(ib.tracks)
        for key in ta:
            self._bind(key, b, now_s)
        for key in tb:
            self._bind(key, a, now_s)
        for key, old, new in [(k, a, b) for k in ta] + [(k, b, a) for k in tb]:
            self._emit(IdentityEvent(IdentityEventKind.MOVED, new, now_s, key[0], key[1], merged_id=old, score=score))
        ra, rb = np.sum(ia.recent, axis=0), np.sum(ib.recent, axis=0)
        assert ia.appearance.total is not None and ib.appearance.total is not None
        ia.appearance.total = ia.appearance.total - ra + rb
        ib.appearance.total = ib.appearance.total - rb + ra
        ia.recent, ib.recent = ib.recent, ia.recent
        ia.xy, ib.xy = ib.xy, ia.xy
        ia.xy_s, ib.xy_s = ib.xy_s, ia.xy_s
        ia.trail, ib.trail = ib.trail, ia.trail
        ia.near.pop(b, None)
        ib.near.pop(a, None)
        self.swaps_undone += 1

    # -- people who come back -------------------------------------------------------------------
    def reentry_log_odds(self, gone: int, new: int) -> float | None:
        """Evidence (log-odds) that identity ``new`` is identity ``gone`` come back; None when impossible."""
        g, n = self._identities.get(gone), self._identities.get(new)
        return None if g is None or n is None else self.linker.log_odds(g, n)

    def _link_reentries(self, now_s: float) -> None:
        """Tentative identities that prove to be someone seen before take that person's id (`linking`)."""
        links, still_open = self.linker.weigh(self._identities.values(), now_s)
        self._open.update(still_open)
        for link in links:
            ident = self._identities[link.tentative]
            keys = sorted(ident.tracks)
            for key in keys:
                self._bind(key, link.candidate, now_s)
            # Linked before its id was shown: the person simply came back (a `matched` event per track) rather than
            # being created and merged away.
            unseen = not ident.shown
            self._merge(ident.gid, link.candidate, now_s, link.score)
            if unseen:
                for cam, track in keys:
                    self._emit(
                        IdentityEvent(IdentityEventKind.MATCHED, link.candidate, now_s, cam, track, score=link.score)
                    )
            self.reentries += 1

    def _prune(self, now_s: float) -> None:
        cfg = self.config
        for ident in list(self._identities.values()):
            idle = now_s - ident.last_s
            if idle >= cfg.lost_after_s and not ident.lost_reported:
                ident.lost_reported = True
                self._emit(IdentityEvent(IdentityEventKind.LOST, ident.gid, now_s))
            if idle > cfg.identity_ttl_s:
                for k in list(ident.tracks):
                    self.forget_track(*k)
                self.gallery.remove(ident.gid)
                del self._identities[ident.gid]
                if not ident.shown:
                    self._gone_unseen.add(ident.gid)
        for k in [k for k, t in self._tracks.items() if now_s - t.last_s > TRACK_FORGET_S]:
            self.forget_track(*k)
