from __future__ import annotations

import numpy as np

from app.services.reid import IdentityRegistry, Observation, ReIdConfig


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


A, B = unit([1, 0, 0, 0]), unit([0, 1, 0, 0])


def test_same_person_in_overlapping_cameras_shares_a_global_id() -> None:
    reg = IdentityRegistry(4)
    g1 = reg.assign([Observation("c1", 1, A, (0.0, 0.0)), Observation("c1", 2, B, (5.0, 0.0))], 0.0)
    # c2 sees both at the same moment, positions within a metre of c1's
    g2 = reg.assign([Observation("c2", 7, B, (5.3, 0.2)), Observation("c2", 8, A, (0.2, -0.1))], 0.0)
    assert g2 == [g1[1], g1[0]]
    assert reg.total_identities == 2


def test_same_time_far_apart_never_merges_even_if_similar() -> None:
    reg = IdentityRegistry(4)
    (g1,) = reg.assign([Observation("c1", 1, A, (0.0, 0.0))], 0.0)
    (g2,) = reg.assign([Observation("c2", 1, A, (6.0, 0.0))], 0.0)
    assert g1 != g2


def test_travel_time_gates_reappearance() -> None:
    reg = IdentityRegistry(4, ReIdConfig(max_speed_mps=2.0))
    (g1,) = reg.assign([Observation("c1", 1, A, (0.0, 0.0))], 0.0)
    # 2 s later 30 m away: impossible on foot → new identity despite identical appearance
    (g2,) = reg.assign([Observation("c2", 5, A, (30.0, 0.0))], 2.0)
    assert g2 != g1
    # 10 s later 15 m away: plausible → same identity
    (g3,) = reg.assign([Observation("c3", 9, A, (15.0, 0.0))], 10.0)
    assert g3 == g1


def test_one_to_one_assignment_per_frame() -> None:
    reg = IdentityRegistry(4)
    (g1,) = reg.assign([Observation("c1", 1, A, (0.0, 0.0))], 0.0)
    # two new tracks in c2 both look like A and both stand close: only one can be that person
    out = reg.assign([Observation("c2", 1, A, (0.1, 0.0)), Observation("c2", 2, A, (0.4, 0.0))], 0.0)
    assert out.count(g1) == 1
    assert out[0] == g1  # the closer one wins


def test_ids_do_not_flicker_and_one_camera_cannot_show_a_person_twice() -> None:
    reg = IdentityRegistry(4)
    (g1,) = reg.assign([Observation("c1", 1, A, (0.0, 0.0))], 0.0)
    for k in range(1, 10):
        # the appearance drifts completely; the track keeps its global id
        got = reg.assign([Observation("c1", 1, B, (0.1 * k, 0.0)), Observation("c1", 2, A, (0.1 * k, 0.05))], k * 0.1)
        assert got[0] == g1
        assert got[1] != g1


def test_identities_expire_after_ttl() -> None:
    reg = IdentityRegistry(4, ReIdConfig(identity_ttl_s=5.0))
    (g1,) = reg.assign([Observation("c1", 1, A, (0.0, 0.0))], 0.0)
    reg.assign([Observation("c2", 3, B, (50.0, 0.0))], 10.0)
    assert reg.active_identities == 1
    (g3,) = reg.assign([Observation("c1", 4, A, (0.0, 0.0))], 11.0)
    assert g3 != g1
