"""Re-entry, appearance built for people, and the per-camera adaptation — on constructed scenes and real crops."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.config import Settings
from app.evaluation.mot_metrics import Sequence, reentry_stats
from app.models.part_colour import PartColourEmbedder
from app.services.identity import IdentityEventKind, IdentityRegistry, Observation, ReIdConfig
from app.services.identity.geometry import GeometryConfig, GeometryGate
from app.services.identity.linking import ReentryLinker
from app.services.identity.reentry import (
    LOOKS_PRIORS,
    AppearanceEvidence,
    Exit,
    MotionEvidence,
    ReentryConfig,
    assign_links,
)
from app.services.identity.scene_adaptation import CameraCentring
from app.services.identity.state import IdentityState
from tests.conftest import shared

DT = 1 / 7
RNG = np.random.default_rng(7)
DIM = 128


def person_look(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM)
    return v / np.linalg.norm(v)


def seen(look: np.ndarray, noise: float = 0.15) -> np.ndarray:
    v = look + RNG.normal(scale=noise, size=DIM) / np.sqrt(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def registry(match_threshold: float = 0.85, *, newcomer_looks: int = 1, confirm_frames: int = 1,
             reentry: bool = True) -> IdentityRegistry:
    linking = ReentryConfig(window_s=6.0, min_samples=3, newcomer_min_samples=newcomer_looks) if reentry else None
    cfg = ReIdConfig(reentry=linking, lost_after_s=2.0, match_threshold=match_threshold, confirm_frames=confirm_frames)
    return IdentityRegistry(DIM, cfg)


Walker = tuple[np.ndarray, tuple[float, float], tuple[float, float]]


def walk(reg: IdentityRegistry, people: dict[int, Walker], t0: float, seconds: float, track_base: int,
         since: dict[int, float] | None = None,
         trace: list[dict[int, int | None]] | None = None) -> dict[int, set[int | None]]:
    """People (key → look, xy at time ``since[key]`` (default 0), velocity) walking in camera c1, each on a track
    ``track_base + key``, from ``t0`` for ``seconds``; the global ids each person got (frame by frame in
    ``trace``)."""
    ids: dict[int, set[int | None]] = {k: set() for k in people}
    steps = round(seconds / DT)
    for i in range(steps):
        t = t0 + i * DT
        keys = list(people)
        observations = []
        for k in keys:
            look, (x, y), (vx, vy) = people[k]
            dt = t - (since or {}).get(k, 0.0)
            observations.append(Observation("c1", track_base + k, seen(look), (x + vx * dt, y + vy * dt)))
        gids = reg.assign(observations, t)
        for k, gid in zip(keys, gids, strict=True):
            ids[k].add(gid)
        if trace is not None:
            trace.append(dict(zip(keys, gids, strict=True)))
    return ids


def crowd(n: int, seed: int = 0) -> dict[int, Walker]:
    """``n`` people walking north side by side, 3 m apart."""
    return {k: (person_look(seed + k), (3.0 * k, 0.0), (0.0, 0.5)) for k in range(n)}


def leave_and_return(
    reg: IdentityRegistry, gap_s: float, back: Walker, trace: list[dict[int, int | None]] | None = None
) -> tuple[int | None, set[int | None], dict[int, set[int | None]]]:
    """Eight people walk for 8 s; person 2 (walking east along y = 40) leaves every view for ``gap_s`` while the
    others walk on, then ``back`` enters on a new track (key 12 in ``trace``). Returns person 2's old id, the ids
    ``back`` got and the ids of everybody else afterwards."""
    people = crowd(8)
    people[2] = (people[2][0], (-4.0, 40.0), (1.0, 0.0))
    before = walk(reg, people, 0.0, 8.0, track_base=0)
    assert all(len(v) == 1 for v in before.values())
    rest = {k: v for k, v in people.items() if k != 2}
    walk(reg, rest, 8.0, gap_s, track_base=0)
    t_back = 8.0 + gap_s
    after = walk(reg, rest | {12: back}, t_back, 6.0, track_base=0, since={12: t_back}, trace=trace)  # new track 12
    return next(iter(before[2])), after[12], {k: after[k] for k in rest}


def test_a_person_who_crosses_a_blind_area_keeps_the_id() -> None:
    """Person 2 walks out of every view and 5 s later enters another view where the walk leads, on a new track:
    the same global id (at once or after a short tentative one, reported as a merge with its log-odds)."""
    reg = registry()
    # leaves at (4, 40) walking east at 1 m/s; after 5 s in the blind area comes into view at (9, 40)
    old, ids, others = leave_and_return(reg, 5.0, (person_look(2), (9.0, 40.0), (1.0, 0.0)))
    assert old in ids and len(ids) <= 2
    assert all(len(v) == 1 for v in others.values())  # nobody else was touched
    assert reg.assign([Observation("c1", 12, seen(person_look(2)), (15.5, 40.0))], 19.0) == [old]
    if len(ids) == 2:
        merges = [e for e in reg.events.recent() if e.kind is IdentityEventKind.MERGED]
        assert merges and merges[-1].global_id == old and merges[-1].score is not None
        assert reg.reentries == 1


def test_a_person_who_comes_back_after_a_long_absence_is_linked_by_looks() -> None:
    """12 s away, further along the way: position alone says little by then (its ratio is about zero), so the
    link rests on looks,
    calibrated online from the scene's own same-person and different-people pairs (the gallery's fixed
    re-appearance threshold is set out of reach so that only the re-entry link can do it)."""
    reg = registry(match_threshold=0.999)
    old, ids, _ = leave_and_return(reg, 12.0, (person_look(2), (15.0, 41.0), (1.0, 0.0)))
    assert old in ids
    assert reg.appearance_evidence.calibrated
    assert reg.reentries == 1


@pytest.mark.parametrize("newcomer_looks", [1, 3])
def test_a_returner_s_own_id_is_shown_only_until_their_looks_count(newcomer_looks: int) -> None:
    """Back after 12 s, where position says little: the link waits for the newcomer's looks. By default one look
    counts, so the returner is linked in the frame they appear (no id flashes for a few frames before it is
    merged); asking for three shows the tentative id until the third."""
    reg = registry(0.999, newcomer_looks=newcomer_looks)
    trace: list[dict[int, int | None]] = []
    old, ids, _ = leave_and_return(reg, 12.0, (person_look(2), (15.0, 41.0), (1.0, 0.0)), trace)
    assert old in ids and reg.reentries == 1
    shown_apart = sum(1 for frame in trace if frame[12] != old)
    assert shown_apart == newcomer_looks - 1, [frame[12] for frame in trace[:5]]
    assert ReentryConfig().newcomer_min_samples == 1
    events = reg.events.recent()
    came_back = [e for e in events if e.track_id == 12 and e.score is not None]
    if newcomer_looks == 1:
        # never shown under an id of its own: the person came back (matched), nothing created and merged away
        assert [(e.kind, e.global_id) for e in came_back] == [(IdentityEventKind.MATCHED, old)]
        assert not [e for e in events if e.kind is IdentityEventKind.MERGED]
        shown = {gid for frame in trace for gid in frame.values()}
        assert {e.global_id for e in events if e.kind is IdentityEventKind.CREATED} <= shown | {old}
        assert reg.total_identities == len(shown)
    else:
        merged = [e for e in events if e.kind is IdentityEventKind.MERGED]
        assert [(e.global_id, e.score is not None) for e in merged] == [(old, True)]


def test_a_returner_recognised_within_the_confirmation_frames_never_shows_an_id_of_their_own() -> None:
    """Three looks asked for, and a new person shown from their third frame while someone who left could be
    them: the returner's track has no id for two frames, then the old one — nothing created, nothing merged."""
    reg = registry(0.999, newcomer_looks=3, confirm_frames=3)
    trace: list[dict[int, int | None]] = []
    old, ids, others = leave_and_return(reg, 12.0, (person_look(2), (15.0, 41.0), (1.0, 0.0)), trace)
    assert [frame[12] for frame in trace[:4]] == [None, None, old, old]
    assert ids == {None, old} and all(len(v) == 1 and None not in v for v in others.values())
    events = reg.events.recent()
    assert [(e.kind, e.global_id, e.score is not None) for e in events if e.track_id == 12] == [
        (IdentityEventKind.MATCHED, old, True)
    ]
    assert not [e for e in events if e.kind is IdentityEventKind.MERGED]
    assert reg.total_identities == 8 == len([e for e in events if e.kind is IdentityEventKind.CREATED])


def test_a_false_detection_that_lives_two_frames_is_never_shown() -> None:
    """After someone has left, a box that lives two frames gets no id and no event; a newcomer who stays is shown
    from their third frame, announced then as created by their first track, with the other camera's track as
    matched."""
    reg = registry(0.999, confirm_frames=3)
    people = crowd(3)
    walk(reg, people, 0.0, 4.0, track_base=0)
    stay = {k: people[k] for k in (0, 1)}
    walk(reg, stay, 4.0, 3.0, track_base=0)  # person 2 leaves every view at (6, 2)
    reg.drain_events()

    def frame(i: int, extra: list[Observation]) -> list[int | None]:
        t = 7.0 + i * DT
        walking = [Observation("c1", k, seen(look), (x + vx * t, y + vy * t))
                   for k, (look, (x, y), (vx, vy)) in stay.items()]  # fmt: skip
        return reg.assign(walking + extra, t)[2:]

    ghost = [Observation("c2", 50, seen(person_look(77)), (6.0, 9.0))]  # within reach of person 2, off their walk
    assert frame(0, ghost) == [None] and frame(1, ghost) == [None]
    assert reg.drain_events() == [] and reg.total_identities == 3
    newcomer = person_look(88)
    both = [("c3", 60, (10.0, 6.0)), ("c4", 61, (10.2, 6.0))]  # two cameras see them from the start
    shown = [frame(i, [Observation(c, k, seen(newcomer), xy) for c, k, xy in both]) for i in range(2, 6)]
    assert shown[:2] == [[None, None]] * 2 and shown[2][0] is not None and shown[2:] == [shown[2]] * 2
    gid = shown[2][0]
    told = [(e.kind, e.global_id, e.camera_id, e.track_id) for e in reg.drain_events()]
    assert told == [(IdentityEventKind.CREATED, gid, "c3", 60), (IdentityEventKind.MATCHED, gid, "c4", 61)]
    assert reg.total_identities == 4


@pytest.mark.parametrize("reentry", [True, False])
def test_people_are_shown_at_once_when_nobody_they_could_be_has_left(reentry: bool) -> None:
    reg = registry(0.999, confirm_frames=3, reentry=reentry)
    ids = walk(reg, crowd(4), 0.0, 1.0, track_base=0)
    assert all(len(v) == 1 and None not in v for v in ids.values())
    assert reg.total_identities == 4


def test_a_new_person_is_not_forced_onto_an_old_id() -> None:
    """A stranger enters exactly where person 2 would be after walking on for 5 s: position alone would link,
    but looks learnt in the scene say it is someone else — a new identity, and it stays one."""
    reg = registry()
    old, ids, _ = leave_and_return(reg, 5.0, (person_look(999), (9.0, 40.0), (1.0, 0.0)))
    assert old not in ids
    assert reg.reentries == 0
    scores = [reg.reentry_log_odds(old, gid) for gid in ids]
    assert all(s is None or s < 0 for s in scores), scores


def test_someone_who_appears_too_far_to_have_walked_is_never_linked() -> None:
    reg = registry()
    old, ids, _ = leave_and_return(reg, 5.0, (person_look(2), (80.0, 40.0), (1.0, 0.0)))
    assert old not in ids  # 76 m in 5 s: not the same person, however alike
    assert all(reg.reentry_log_odds(old, gid) is None for gid in ids)


def test_a_crowd_crossing_keeps_every_id() -> None:
    """Six people cross one spot from both sides at once (tracks end and restart on the far side, as a tracker
    that lost them in the crush would do); each keeps their own id."""
    reg = registry()
    left = {k: (person_look(k), (-6.0, 1.0 * k), (1.0, 0.0)) for k in range(3)}
    right = {k: (person_look(k), (6.0, 1.0 * (k - 3) + 0.5), (-1.0, 0.0)) for k in range(3, 6)}
    first = walk(reg, left | right, 0.0, 4.0, track_base=0)
    # the crush: nobody is tracked for 3 s; then everybody re-appears where they would have walked to
    walk(reg, left | right, 7.0, 6.0, track_base=100)
    last = reg.assign(
        [Observation("c1", 100 + k, seen(look), (x + vx * 13.0, y)) for k, (look, (x, y), (vx, _)) in
         (left | right).items()],
        13.0,
    )
    for k, gid in zip(left | right, last, strict=True):
        assert first[k] == {gid}, k  # everyone ends under the id they had before the crush
    assert len(set(last)) == 6


def test_appearance_evidence_is_learnt_from_the_scene_and_bounded() -> None:
    cfg = ReentryConfig(min_pairs=4, appearance_clip=3.0)
    ev = AppearanceEvidence(cfg)
    assert ev.log_odds(0.99) == 0.0  # nothing learnt yet: looks count for nothing
    for i in range(6):
        ev.same.put((i,), 0.7 + 0.02 * i)
        ev.different.put((i, 100), 0.1 + 0.02 * i)
    assert ev.calibrated
    assert ev.log_odds(0.8) > 0 > ev.log_odds(0.1)
    assert ev.log_odds(5.0) == 3.0 and ev.log_odds(-5.0) == -3.0  # a weak descriptor never decides alone
    flat = AppearanceEvidence(cfg)
    for i in range(6):
        flat.same.put((i,), 0.1)
        flat.different.put((i, 100), 0.3)
    assert flat.log_odds(0.9) == 0.0  # no separation in this scene: looks are ignored


def test_motion_evidence_follows_the_walk_and_fades_with_the_gap() -> None:
    walk = GeometryGate(GeometryConfig(max_map_distance_m=1.0, max_speed_mps=3.0))
    ev = MotionEvidence(ReentryConfig(scene_area_m2=300.0, birth_radius_m=0.0), walk)
    leaving = Exit((0.0, 0.0), 10.0, (1.0, 0.0))
    on_path = ev.log_odds(leaving, (3.0, 0.0), 13.0)
    off_path = ev.log_odds(leaving, (-3.0, 0.0), 13.0)
    late = ev.log_odds(leaving, (30.0, 0.0), 40.0)
    assert on_path is not None and off_path is not None and late is not None
    assert on_path > 1.0 and off_path < on_path - 1.0
    assert late < on_path  # 30 s out of sight: where they turn up says less
    assert ev.log_odds(leaving, (50.0, 0.0), 13.0) is None  # 50 m in 3 s
    assert ev.log_odds(leaving, (3.0, 0.0), 9.0) is None  # before they left
    busy = MotionEvidence(ReentryConfig(scene_area_m2=300.0, birth_radius_m=2.0), walk)
    for _ in range(30):
        busy.born((3.0, 0.5))  # a doorway: people keep appearing here
    crowded = busy.log_odds(leaving, (3.0, 0.0), 13.0)
    assert crowded is not None and crowded < on_path - 1.0


def test_walk_noise_matches_how_people_stray_from_their_walk() -> None:
    """The motion model's spread after a gap is how far real walkers end up from walking on at their exit velocity
    (root-mean-square per axis, over the ground-truth trajectories): within 25 % from 2 s to 10 s — the old
    linear spread (0.5 m/s) was 60 % too wide at 2 s."""
    from collections import defaultdict, deque

    from app.services.identity.reentry import _walk, walking_velocity

    rows = np.loadtxt(shared("multiview-dev", "gt", "gt_world.txt"), delimiter=",", ndmin=2)
    fps = 7.0
    tracks: dict[int, dict[int, tuple[float, float]]] = defaultdict(dict)
    for f, pid, x, y in rows[:, :4]:
        tracks[int(pid)][int(f)] = (x, y)
    cfg = ReentryConfig()
    for gap_s in (2, 4, 6, 10):
        errors = []
        for positions in tracks.values():
            for f in sorted(positions)[::3]:
                later = f + round(gap_s * fps)
                trail = deque((k / fps, *positions[k]) for k in range(f - round(1.5 * fps), f + 1) if k in positions)
                velocity = walking_velocity(trail)
                if later in positions and velocity is not None and len(trail) >= 8:
                    x, y = _walk(positions[f], velocity, gap_s, cfg.max_walk_mps)
                    errors.append(np.hypot(x - positions[later][0], y - positions[later][1]))
        assert len(errors) > 300
        measured = float(np.sqrt(np.mean(np.square(errors)) / 2))
        modelled = float(np.sqrt(cfg.walk_noise_m2ps3 * gap_s**3))
        assert 0.75 * measured < modelled < 1.25 * measured, (gap_s, measured, modelled)


def test_links_are_one_to_one_and_need_a_lead() -> None:
    cfg = ReentryConfig(link_log_odds=1.5, margin=1.0)
    links = assign_links({(10, 1): 4.0, (10, 2): 1.0, (11, 1): 2.5, (11, 2): 2.6}, cfg)
    assert [(k.tentative, k.candidate) for k in links] == [(10, 1)]  # 11→2 hardly beats 11→1: undecided
    assert assign_links({(10, 1): 3.0, (10, 2): 2.5}, cfg) == []  # no lead over the runner-up
    assert assign_links({(10, 1): 1.2}, cfg) == []  # not enough evidence: a new person
    assert [(k.tentative, k.candidate) for k in assign_links({(10, 1): 2.0}, cfg)] == [(10, 1)]


def test_a_newcomer_s_last_chance_needs_a_large_lead() -> None:
    """When a newcomer's window closes, less evidence links it if nothing else comes close; only then."""
    cfg = ReentryConfig(link_log_odds=2.0, margin=1.0, closing_log_odds=1.0, closing_margin=3.0)
    alone = {(10, 1): 1.2, (10, 2): -2.5}
    assert assign_links(alone, cfg) == []  # still open: it waits for more evidence
    assert [(k.tentative, k.candidate) for k in assign_links(alone, cfg, frozenset({10}))] == [(10, 1)]
    assert assign_links({(10, 1): 1.2, (10, 2): -1.0}, cfg, frozenset({10})) == []  # a lead of 2.2 only
    assert assign_links({(10, 1): 1.2, (11, 1): -1.0}, cfg, frozenset({10})) == []  # another newcomer near it
    assert assign_links({(10, 1): 0.8}, cfg, frozenset({10})) == []  # too little evidence even then
    assert assign_links(alone, ReentryConfig(closing_log_odds=99.0), frozenset({10})) == []  # off


def _leaver(gid: int, t_left: float, xy: tuple[float, float], velocity: tuple[float, float]) -> IdentityState:
    """Someone last seen at ``xy`` at ``t_left``, walking at ``velocity`` over the 1.5 s before."""
    ident = IdentityState(gid, 0.0, t_left, xy=xy, xy_s=t_left)
    for i in range(11, -1, -1):
        t = t_left - i * 0.125
        ident.trail.append((t, xy[0] - velocity[0] * (t_left - t), xy[1] - velocity[1] * (t_left - t)))
    return ident


def _newcomer(gid: int, t: float, xy: tuple[float, float], window_s: float = 6.0) -> IdentityState:
    return IdentityState(gid, t, t, xy=xy, xy_s=t, tentative_until=t + window_s, first_xy=xy, first_xy_s=t)


def test_the_linker_weighs_each_newcomer_against_those_who_left_and_closes_its_window_once() -> None:
    cfg = ReentryConfig(window_s=6.0, closing_log_odds=1.0, closing_margin=3.0)
    linker = ReentryLinker(cfg, GeometryGate(GeometryConfig(max_map_distance_m=1.0, max_speed_mps=3.0)))
    gone = _leaver(1, 5.0, (0.0, 0.0), (1.0, 0.0))
    back = _newcomer(2, 7.0, (2.0, 0.0))  # where walking on for 2 s leads
    links, still_open = linker.weigh([gone, back], 7.0)
    assert [(k.tentative, k.candidate) for k in links] == [(2, 1)] and links[0].score >= cfg.link_log_odds
    assert still_open == {2}
    far = _newcomer(3, 7.0, (30.0, 0.0))  # 30 m in 2 s: nobody walks that fast
    assert linker.weigh([gone, far], 7.0) == ([], set())
    assert linker.log_odds(gone, far) is None
    # a newcomer whose window passes is weighed once more (the last chance), then is a new person for good
    late = _newcomer(4, 7.0, (-3.0, 4.0))  # nowhere near where the walk led: no link
    assert linker.weigh([gone, late], 13.5) == ([], set())
    assert late.tentative_until is None
    assert linker.weigh([gone, late], 13.6) == ([], set())
    seen_then = _newcomer(5, 4.0, (2.0, 0.0))  # appeared while person 1 was still seen: someone else
    assert linker.log_odds(gone, seen_then) is None


def _turned_back(closing: float, look: np.ndarray) -> tuple[int, set[int | None], IdentityRegistry]:
    """Person 2 walks east, leaves every view, and 12 s later comes back into view 2 m *behind* where they left,
    walking west (they turned round out of sight): position says little for them (log-odds about 1.2, under the
    link threshold of 2). ``look``: who enters there. Returns person 2's id, the newcomer's ids over 7 s, and the
    registry."""
    linking = ReentryConfig(window_s=6.0, min_samples=3, closing_log_odds=closing, closing_margin=3.0)
    reg = IdentityRegistry(DIM, ReIdConfig(reentry=linking, lost_after_s=2.0, match_threshold=0.999))
    people = crowd(8)
    people[2] = (people[2][0], (-4.0, 40.0), (1.0, 0.0))
    before = walk(reg, people, 0.0, 8.0, track_base=0)
    rest = {k: v for k, v in people.items() if k != 2}
    walk(reg, rest, 8.0, 12.0, track_base=0)
    after = walk(reg, rest | {12: (look, (2.0, 40.0), (-1.0, 0.0))}, 20.0, 7.0, track_base=0, since={12: 20.0})
    assert all(len(after[k]) == 1 for k in rest)  # nobody else touched
    return next(iter(before[2])), after[12], reg


def test_a_returner_who_turned_back_is_linked_when_their_window_closes() -> None:
    old, ids, reg = _turned_back(99.0, person_look(2))
    assert old not in ids and reg.reentries == 0  # without the last chance: a new person for good
    old, ids, reg = _turned_back(1.0, person_look(2))
    assert old in ids and len(ids) == 2 and reg.reentries == 1  # their own id for 6 s, then the old one back
    merges = [e for e in reg.events.recent() if e.kind is IdentityEventKind.MERGED]
    assert [e.global_id for e in merges] == [old] and merges[0].merged_id in ids  # said so: history counts one
    assert merges[0].score is not None and 1.0 <= merges[0].score < 2.0  # on the last chance's lower bar
    old, ids, reg = _turned_back(1.0, person_look(9))  # a stranger entering there keeps their own
    assert old not in ids and len(ids) == 1 and reg.reentries == 0


def test_seen_ground_area_is_the_union_of_the_footprints() -> None:
    from app.services.environments import load_environment
    from app.services.homography import seen_ground_area_m2

    env = load_environment(shared("multiview-dev"))
    area = seen_ground_area_m2(env)
    total = env.map.width_m * env.map.height_m
    assert 50.0 < area < total


def test_camera_centring_removes_a_camera_s_colour_cast() -> None:
    looks = [person_look(i) for i in range(8)]
    cast_a, cast_b = person_look(100) * 2.0, person_look(200) * 2.0
    centring = CameraCentring(warmup=500, min_seen=10)
    for _ in range(40):
        for look in looks:
            centring.observe("a", seen(look + cast_a, 0.05))
            centring.observe("b", seen(look + cast_b, 0.05))

    def sim(i: int, j: int, adapt: bool) -> float:
        va, vb = seen(looks[i] + cast_a, 0.05), seen(looks[j] + cast_b, 0.05)
        if adapt:
            va, vb = centring.adapt("a", va), centring.adapt("b", vb)  # type: ignore[assignment]
        return float(va @ vb)

    raw_gap = np.mean([sim(i, i, False) - sim(i, (i + 1) % 8, False) for i in range(8)])
    adapted_gap = np.mean([sim(i, i, True) - sim(i, (i + 1) % 8, True) for i in range(8)])
    assert adapted_gap > 2 * raw_gap
    assert CameraCentring(min_seen=10).adapt("new-camera", looks[0]) is None


def test_part_colour_tells_clothes_apart_by_body_part() -> None:
    emb = PartColourEmbedder()

    def person(top: tuple[int, int, int], legs: tuple[int, int, int], seed: int) -> np.ndarray:
        img = np.full((120, 50, 3), (90, 110, 100), np.uint8)  # background
        img[22:70, 12:38] = top
        img[70:118, 14:36] = legs
        img[4:22, 18:32] = (60, 80, 120)  # head
        noise = np.random.default_rng(seed).normal(0, 8, img.shape)
        return np.clip(img + noise, 0, 255).astype(np.uint8)

    red_blue = emb.embed([person((30, 30, 200), (150, 60, 20), s) for s in range(2)])
    blue_red = emb.embed([person((150, 60, 20), (30, 30, 200), 3)])
    black_white = emb.embed([person((20, 20, 20), (230, 230, 230), 4)])
    assert red_blue.shape == (2, emb.dim)
    assert np.allclose(np.linalg.norm(red_blue, axis=1), 1.0, atol=1e-5)
    same = float(red_blue[0] @ red_blue[1])
    # the same colours on the other body parts are another outfit
    assert same > float(red_blue[0] @ blue_red[0]) + 0.2
    assert same > float(red_blue[0] @ black_white[0]) + 0.2
    assert emb.embed([]).shape == (0, emb.dim)
    assert not emb.describe(np.zeros((0, 0, 3), np.uint8)).any()


def test_reentry_stats_count_people_who_left_every_view() -> None:
    def rows(frame_ids: list[tuple[int, int]]) -> np.ndarray:
        return np.asarray([[0, pid, 10.0 * pid, 0, 5, 10] for _f, pid in frame_ids], np.float64).reshape(-1, 6)

    # person 1 in frames 0-9 and 30-39 (left for 20 frames), person 2 always there; ids: 1 keeps 7, 2 is 8
    gt, pred = [], []
    for f in range(40):
        present = [(f, 2)] + ([(f, 1)] if f < 10 or f >= 30 else [])
        g = rows(present)
        p = g.copy()
        p[:, 1] = np.where(g[:, 1] == 1, 7, 8)
        gt.append(g)
        pred.append(p)
    kept = reentry_stats([Sequence(gt, pred)], gap_frames=14, window_frames=5)
    assert (kept.gt_reentries, kept.scored, kept.kept) == (1, 1, 1)
    for f in range(30, 40):
        pred[f][pred[f][:, 1] == 7, 1] = 9  # comes back under a new id
    lost = reentry_stats([Sequence(gt, pred)], gap_frames=14, window_frames=5)
    assert (lost.gt_reentries, lost.scored, lost.kept) == (1, 1, 0)
    assert reentry_stats([Sequence(gt, pred)], gap_frames=25, window_frames=5).gt_reentries == 0


@pytest.mark.parametrize("weight", [0.0, 0.7, 1.0])
def test_fused_embedder_cosine_is_the_weighted_mean_of_its_parts(weight: float) -> None:
    from app.core.config import Settings
    from app.models.registry import build_embedder

    emb = build_embedder(Settings(embedder="fused", embedder_colour_weight=weight))
    crops = [np.random.default_rng(i).integers(0, 255, (64, 32, 3), dtype=np.uint8) for i in range(3)]
    v = emb.embed(crops)
    assert v.shape == (3, emb.dim)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    if 0 < weight < 1:
        pc = PartColourEmbedder().embed(crops)
        ef = v[:, pc.shape[1]:] / np.sqrt(1 - weight)
        expect = weight * float(pc[0] @ pc[1]) + (1 - weight) * float(ef[0] @ ef[1])
        assert float(v[0] @ v[1]) == pytest.approx(expect, abs=1e-4)


def _early_return(prior: tuple[float, float, float] | None, returner_look: np.ndarray) -> tuple[int | None, set]:
    """Two people walk; after 2 s person A (walking east at 1 m/s) leaves every view, and 6 s later someone
    enters where A's walk leads — before the scene has the pairs to calibrate looks on its own. Returns A's id
    and the ids the newcomer got."""
    linking = ReentryConfig(window_s=6.0, min_samples=3, looks_prior=prior)
    reg = IdentityRegistry(DIM, ReIdConfig(reentry=linking, lost_after_s=2.0, match_threshold=0.999))
    a, b = person_look(1), person_look(2)
    before = walk(reg, {0: (a, (0.0, 40.0), (1.0, 0.0)), 1: (b, (0.0, 10.0), (0.0, 0.5))}, 0.0, 2.0, track_base=0)
    walk(reg, {1: (b, (0.0, 10.0), (0.0, 0.5))}, 2.0, 6.0, track_base=0)
    after = walk(reg, {1: (b, (0.0, 10.0), (0.0, 0.5)), 5: (returner_look, (8.0, 40.0), (1.0, 0.0))}, 8.0, 3.0,
                 track_base=0, since={5: 8.0})  # fmt: skip
    assert not (len(reg.appearance_evidence.same) >= 8 and len(reg.appearance_evidence.different) >= 8)
    return next(iter(before[0])), after[5]


def test_looks_count_from_a_task_s_first_seconds_with_a_prior() -> None:
    """Where the walk leads after 6 s is not enough on its own (log-odds about 1.6 < 2); the same looks are.
    Without a prior the scene has no calibration yet and A gets a new id; with one A keeps it, and a stranger
    entering at that spot still gets their own."""
    prior = LOOKS_PRIORS["fused"]
    old, ids = _early_return(None, person_look(1))
    assert old not in ids
    old, ids = _early_return(prior, person_look(1))
    assert ids == {old}
    old, ids = _early_return(prior, person_look(9))
    assert old not in ids and len(ids) == 1


def test_a_looks_prior_gives_way_to_the_scene_s_own_pairs() -> None:
    cfg = ReentryConfig(looks_prior=(0.55, -0.1, 0.3), looks_prior_pairs=24)
    ev = AppearanceEvidence(cfg)
    assert ev.calibrated and ev.log_odds(0.8) > 0 > ev.log_odds(-0.3)  # from the start, before any pair
    assert ev.log_odds(0.65) > 0
    for i in range(200):  # a scene whose people look more alike: different people ~0.6, the same ~0.9
        ev.same.put((i,), 0.9 + 0.0005 * (i % 20))
        ev.different.put((i, 1000), 0.6 + 0.0005 * (i % 20))
    assert ev.log_odds(0.65) < 0 < ev.log_odds(0.85)
    flat = AppearanceEvidence(cfg)
    for i in range(200):  # no separation in this scene: it outweighs the prior and looks are ignored
        flat.same.put((i,), 0.1)
        flat.different.put((i, 1000), 0.3)
    assert flat.log_odds(0.9) == 0.0


def test_the_looks_prior_is_used_only_for_the_descriptor_it_was_measured_on() -> None:
    def prior(**kw: object) -> object:
        cfg = ReIdConfig.from_settings(Settings(**kw))
        assert cfg.reentry is not None
        return cfg.reentry.looks_prior

    assert prior() == LOOKS_PRIORS["fused"]  # auto: the camera-centred fused descriptor
    assert prior(embedder="fused") == LOOKS_PRIORS["fused"]
    assert prior(reid_looks_prior_pairs=0) is None
    assert prior(embedder="efficientnet_lite0") is None
    assert prior(reid_camera_centring=False) is None
    with pytest.raises(ValueError):
        ReentryConfig(looks_prior=(0.1, 0.5, 0.3))
