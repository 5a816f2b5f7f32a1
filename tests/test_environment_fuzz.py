"""The environment loader against bad files: malformed JSON, wrong types, NaN and infinities, wrong or
degenerate homographies. Every one is either loaded into a usable environment (finite, invertible homographies,
a map of positive size) or refused with ``EnvironmentError_`` naming the file — never another exception, which
would take the server's start-up down with a traceback."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.services.environment_catalog import EnvironmentCatalog
from app.services.environments import EnvironmentError_, EnvironmentSpec, load_environment
from tests.conftest import shared

BASE: dict[str, Any] = json.loads((shared("multiview-dev") / "environment.json").read_text())

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

FIELDS = [
    ("id",),
    ("map",),
    ("map", "width_px"),
    ("map", "height_px"),
    ("map", "pixels_per_meter"),
    ("map", "origin_m"),
    ("map", "image"),
    ("cameras",),
    ("cameras", 0),
    ("cameras", 0, "id"),
    ("cameras", 0, "video"),
    ("cameras", 0, "fps"),
    ("cameras", 0, "width"),
    ("cameras", 0, "height"),
    ("cameras", 0, "image_to_map_homography"),
    ("cameras", 0, "image_to_map_homography", 1),
    ("cameras", 0, "image_to_map_homography", 2, 2),
    ("cameras", 0, "point_pairs"),
    ("cameras", 1, "point_pairs", 0, 1, 0),
    ("overlaps",),
    ("overlaps", 0),
]


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _usable(env: EnvironmentSpec) -> None:
    assert env.map.width_px > 0 and env.map.height_px > 0
    assert math.isfinite(env.map.pixels_per_meter) and env.map.pixels_per_meter > 0
    assert all(math.isfinite(v) for v in env.map.origin_m)
    for cam in env.cameras.values():
        h = env.image_to_metres(cam.id)
        assert np.all(np.isfinite(h)) and abs(np.linalg.det(h)) > 0
        assert math.isfinite(cam.fps) and cam.fps >= 0


def _load(tmp: Path, text: str | bytes) -> EnvironmentSpec:
    f = tmp / "env.json"
    if isinstance(text, bytes):
        f.write_bytes(text)
    else:
        f.write_text(text)
    return load_environment(f)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(FIELDS), value=json_values)
def test_any_value_in_any_field_loads_cleanly_or_is_refused_clearly(
    tmp_path: Path, path: tuple[Any, ...], value: Any
) -> None:
    doc = copy.deepcopy(BASE)
    _set(doc, path, value)
    try:
        env = _load(tmp_path, json.dumps(doc))  # allow_nan: Python writes NaN/Infinity, and reads them back
    except EnvironmentError_ as exc:
        assert "env.json" in str(exc)
        return
    _usable(env)


H = BASE["cameras"][0]["image_to_map_homography"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"image_to_map_homography": [[1, 0, 0], [0, 1, 0]]}, "image_to_map_homography: List should have at least 3"),
        ({"image_to_map_homography": [[1, 0, 0], [0, 1, 0], [0, 0, "x"]]}, "valid number"),
        ({"image_to_map_homography": [[1, 0, 0], [0, 1, 0], [0, 0, float("nan")]]}, "finite number"),
        ({"image_to_map_homography": [[1, 0, 0], [0, 1, 0], [0, 0, float("inf")]]}, "finite number"),
        ({"image_to_map_homography": [[1, 2, 3], [2, 4, 6], [0, 0, 1]]}, "singular"),
        ({"image_to_map_homography": np.array(H).T.tolist()}, "squeezes"),
        ({"image_to_map_homography": [[1, 0, 0], [0, 1, 0], [1, 0, -320]]}, "beyond the horizon"),
        ({"point_pairs": [[[0, 0], [0, 0]]] * 4, "image_to_map_homography": None}, "degenerate"),
        ({"point_pairs": [[[0, 0], [float("nan"), 0]]] * 4, "image_to_map_homography": None}, "finite number"),
        ({"fps": -7}, "fps: Input should be greater than or equal to 0"),
        ({"fps": float("inf")}, "fps"),
        ({"width": 10**9}, "width: Input should be less than or equal to"),
    ],
)
def test_wrong_homographies_and_numbers_are_named(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    doc = copy.deepcopy(BASE)
    doc["cameras"][0].update(patch)
    with pytest.raises(EnvironmentError_, match=rf"camera 'c1'.*{message}"):
        _load(tmp_path, json.dumps(doc))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply|not valid JSON"),
        (json.dumps({**BASE, "map": {**BASE["map"], "pixels_per_meter": float("nan")}}), "map.pixels_per_meter"),
        (json.dumps({**BASE, "map": {**BASE["map"], "origin_m": [0, float("-inf")]}}), "map.origin_m"),
        (json.dumps({**BASE, "map": {"pixels_per_meter": 1e-300, "width_m": 10, "height_m": 10}}), "out of range"),
        (json.dumps({**BASE, "cameras": {"c1": {}}}), "cameras: Input should be a valid list"),
        (json.dumps({**BASE, "overlaps": [["c1", "zz"]]}), "unknown camera"),
        (json.dumps({**BASE, "cameras": [BASE["cameras"][0], BASE["cameras"][0]]}), "appears twice"),
    ],
)
def test_malformed_files_are_refused_with_the_reason(tmp_path: Path, text: str | bytes, message: str) -> None:
    with pytest.raises(EnvironmentError_, match=message):
        _load(tmp_path, text)


def test_a_server_starts_with_the_good_environments_when_others_are_broken(tmp_path: Path) -> None:
    (tmp_path / "nan.json").write_text(
        json.dumps({**BASE, "id": "nan", "map": {**BASE["map"], "pixels_per_meter": float("nan")}})
    )
    (tmp_path / "binary.json").write_bytes(b"\x00\x01\x02")
    (tmp_path / "good.json").write_text(
        json.dumps(
            {
                **BASE,
                "id": "good",
                "cameras": [{**c, "video": str(shared("multiview-dev") / c["video"])} for c in BASE["cameras"]],
            }
        )
    )
    cat = EnvironmentCatalog.from_paths(tmp_path, [])
    assert [e.id for e in cat.all()] == ["good"]
    assert len(cat.errors) == 2 and all("json" in e for e in cat.errors)
