"""People who cross and come out under each other's identity get them back when their looks say so."""

from __future__ import annotations

import numpy as np
import pytest

from app.services.identity import IdentityEventKind, IdentityRegistry, Observation, ReIdConfig
from app.services.identity.crossings import Looks, SwapConfig, pick_swaps, swap_gain
from app.services.identity.reentry import ReentryConfig
from tests.test_reentry import DIM, DT, crowd, person_look, seen, walk


def registry(swaps: bool = True) -> IdentityRegistry:
    cfg = ReIdConfig(reentry=ReentryConfig(window_s=6.0, min_samples=3), lost_after_s=2.0,
                     swaps=SwapConfig() if swaps else None)
    return IdentityRegistry(DIM, cfg)


def cross(
    reg: IdentityRegistry, look_a: np.ndarray, look_b: np.ndarray, trackers_swap: bool
) -> tuple[int, int, list[list[int]]]:
    """Six people walk for 8 s (the scene learns what different and same people look like); then A walks east
    and B west along y = 30, passing each other at x = 0 at t = 11 s. With ``trackers_swap`` the camera's
    tracks 100 and 101 continue on each other's person from there. Returns A's and B's identities before the
    crossing and, for 4 s after it, [identity shown on A, identity shown on B] per frame."""
    walk(reg, crowd(6), 0.0, 8.0, track_base=0)
    others = crowd(6, seed=0)
    t_cross = 11.0
    before: list[int] = []
    after: list[list[int]] = []
    for i in range(round(7.0 / DT)):
        t = 8.0 + i * DT
        xa, xb = (t - t_cross) * 1.0, -(t - t_cross) * 1.0
        swapped = trackers_swap and t >= t_cross
        obs = [
            Observation("c1", k, seen(look), (x + vx * t, y + vy * t))
            for k, (look, (x, y), (vx, vy)) in others.items()
        ]
        a = Observation("c1", 100, seen(look_a), (xa, 30.0))
        b = Observation("c1", 101, seen(look_b), (xb, 30.2))
        if swapped:  # each track now follows the other person
            a, b = Observation("c1", 100, b.embedding, b.map_xy), Observation("c1", 101, a.embedding, a.map_xy)
        gids = reg.assign([*obs, a, b], t)
        on_a, on_b = (gids[-1], gids[-2]) if swapped else (gids[-2], gids[-1])
        if t < t_cross - 0.5:
            before = [on_a, on_b]
        elif t >= t_cross + 3.0:
            after.append([on_a, on_b])
    return before[0], before[1], after


def test_people_who_crossed_under_each_other_s_identity_get_them_back() -> None:
    reg = registry()
    ga, gb, after = cross(reg, person_look(50), person_look(51), trackers_swap=True)
    assert ga != gb
    assert reg.swaps_undone == 1
    assert after and all(shown == [ga, gb] for shown in after), after[:3]
    moved = [e for e in reg.events.recent() if e.kind is IdentityEventKind.MOVED and e.score is not None]
    assert {(e.track_id, e.merged_id, e.global_id) for e in moved} == {(100, ga, gb), (101, gb, ga)}


def test_without_the_check_the_swap_stays() -> None:
    reg = registry(swaps=False)
    ga, gb, after = cross(reg, person_look(50), person_look(51), trackers_swap=True)
    assert after and all(shown == [gb, ga] for shown in after)


def test_people_who_crossed_cleanly_keep_their_identities() -> None:
    reg = registry()
    ga, gb, after = cross(reg, person_look(50), person_look(51), trackers_swap=False)
    assert reg.swaps_undone == 0
    assert after and all(shown == [ga, gb] for shown in after)


def test_look_alikes_are_not_swapped_on_a_hunch() -> None:
    """Two people in near-identical clothes: the looks cannot say who is who, so nothing is swapped back."""
    twin = person_look(50) + np.random.default_rng(3).normal(scale=0.05, size=DIM) / np.sqrt(DIM)
    reg = registry()
    cross(reg, person_look(50), (twin / np.linalg.norm(twin)).astype(np.float32), trackers_swap=True)
    assert reg.swaps_undone == 0


def test_swap_gain_needs_both_sides_and_pairs_are_one_to_one() -> None:
    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    a, b, c = (unit(np.eye(4)[i] + 0.1) for i in range(3))
    llr = lambda s: float(np.clip(6.0 * (s - 0.5), -3.0, 3.0))  # noqa: E731
    swapped = swap_gain(Looks(recent=b, settled=a), Looks(recent=a, settled=b), llr)
    kept = swap_gain(Looks(recent=a, settled=a), Looks(recent=b, settled=b), llr)
    one_sided = swap_gain(Looks(recent=b, settled=a), Looks(recent=c, settled=b), llr)
    assert swapped >= 6.0 > one_sided and kept < 0
    assert pick_swaps({(1, 2): 9.0, (2, 3): 8.0, (4, 5): 5.0}, 6.0) == [(1, 2)]
    with pytest.raises(ValueError):
        SwapConfig(recent=1)
