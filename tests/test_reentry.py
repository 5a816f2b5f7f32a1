"""Re-entry, appearance built for people, and the per-camera adaptation — on constructed scenes and real crops."""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluation.mot_metrics import Sequence, reentry_stats
from app.models.part_colour import PartColourEmbedder
from app.services.identity import IdentityEventKind, IdentityRegistry, Observation, ReIdConfig
from app.services.identity.reentry import DifferentPeopleSimilarities, ReentryConfig, decide
from app.services.identity.scene_adaptation import CameraCentring

DT = 1 / 7
RNG = np.random.default_rng(7)
DIM = 128


def person_look(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM)
    return v / np.linalg.norm(v)


def seen(look: np.ndarray, noise: float = 0.15) -> np.ndarray:
    v = look + RNG.normal(scale=noise, size=DIM) / np.sqrt(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def registry(match_threshold: float = 0.85) -> IdentityRegistry:
    cfg = ReIdConfig(reentry=ReentryConfig(window_s=4.0, min_samples=3), lost_after_s=2.0,
                     match_threshold=match_threshold)
    return IdentityRegistry(DIM, cfg)


Walker = tuple[np.ndarray, tuple[float, float], tuple[float, float]]


def walk(reg: IdentityRegistry, people: dict[int, Walker], t0: float, seconds: float, track_base: int,
         since: dict[int, float] | None = None) -> dict[int, set[int]]:
    """People (key → look, xy at time ``since[key]`` (default 0), velocity) walking in camera c1, each on a track
    ``track_base + key``, from ``t0`` for ``seconds``; the global ids each person got."""
    ids: dict[int, set[int]] = {k: set() for k in people}
    steps = int(seconds / DT)
    for i in range(steps):
        t = t0 + i * DT
        keys = list(people)
        observations = []
        for k in keys:
            look, (x, y), (vx, vy) = people[k]
            dt = t - (since or {}).get(k, 0.0)
            observations.append(Observation("c1", track_base + k, seen(look), (x + vx * dt, y + vy * dt)))
        for k, gid in zip(keys, reg.assign(observations, t), strict=True):
            ids[k].add(gid)
    return ids


def crowd(n: int, seed: int = 0) -> dict[int, tuple[np.ndarray, tuple[float, float], tuple[float, float]]]:
    return {k: (person_look(seed + k), (3.0 * k, 0.0), (0.0, 0.5)) for k in range(n)}


@pytest.mark.parametrize("match_threshold", [0.85, 0.999])
def test_a_person_who_leaves_every_view_and_comes_back_keeps_the_id(match_threshold: float) -> None:
    """At 0.85 the first sighting is alike enough to be matched at once; at 0.999 nothing is matched at once and
    the re-entry link (calibrated on the scene, seconds later, reported as a merge) must bring the id back."""
    reg = registry(match_threshold)
    people = crowd(8)
    before = walk(reg, people, 0.0, 8.0, track_base=0)
    assert all(len(v) == 1 for v in before.values())
    old = next(iter(before[2]))
    # person 2 leaves every view for 20 s while the others walk on; then comes back somewhere else, on a new track
    rest = {k: v for k, v in people.items() if k != 2}
    walk(reg, rest, 8.0, 20.0, track_base=100)
    back = dict(rest)
    back[2] = (people[2][0], (30.0, 5.0), (0.0, -0.5))
    after = walk(reg, back, 28.0, 6.0, track_base=200, since={2: 28.0})
    assert old in after[2] and len(after[2]) <= 2  # at most a tentative id first, then linked
    assert reg.assign([Observation("c1", 202, seen(people[2][0]), (30.0, 2.0))], 34.0) == [old]
    if len(after[2]) == 2:
        merges = [e for e in reg.events.recent() if e.kind is IdentityEventKind.MERGED]
        assert merges and merges[-1].global_id == old and merges[-1].score is not None
        assert reg.reentries == 1
    if match_threshold > 0.99:
        assert len(after[2]) == 2 and reg.reentries == 1


def test_a_new_person_is_not_forced_onto_an_old_id() -> None:
    reg = registry()
    people = crowd(8)
    ids = walk(reg, people, 0.0, 8.0, track_base=0)
    old_ids = set().union(*ids.values())
    # person 2 leaves for good; a stranger (a look nobody had) walks in 20 s later
    rest = {k: v for k, v in people.items() if k != 2}
    walk(reg, rest, 8.0, 20.0, track_base=100)
    scene = dict(rest)
    scene[9] = (person_look(999), (30.0, 5.0), (0.0, -0.5))
    after = walk(reg, scene, 28.0, 6.0, track_base=200, since={9: 28.0})
    assert not after[9] & old_ids
    assert reg.reentries == 0


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


def test_decide_needs_calibration_a_clear_best_and_the_scene_s_different_people_bar() -> None:
    cfg = ReentryConfig(min_negatives=3, quantile=0.9, margin=0.05, floor=0.2)
    neg = DifferentPeopleSimilarities()
    q = person_look(1)
    cands = {1: person_look(1), 2: person_look(2)}
    assert decide(q, cands, neg, cfg) is None  # no calibration yet: no decision at all
    neg.observe({i: person_look(100 + i) for i in range(6)})
    linked = decide(q, cands, neg, cfg)
    assert linked is not None and linked.candidate == 1 and linked.score > linked.threshold
    stranger = decide(person_look(50), cands, neg, cfg)
    assert stranger is not None and stranger.candidate is None  # the explicit "new person"
    twins = decide(q, {1: person_look(1), 3: person_look(1)}, neg, cfg)
    assert twins is not None and twins.candidate is None  # no lead over the runner-up


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
