"""The environment file's shape, checked at the edge (pydantic) before anything is built from it.

Every number must be finite (JSON has no NaN, but Python's parser accepts ``NaN`` and ``Infinity``), sizes and
rates positive and bounded, matrices 3×3; unknown fields are ignored (the dataset format carries ground truth
and provenance the server does not need). ``errors`` turns pydantic's report into one line per problem, each
naming the field, so a user can fix the file without reading a traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Finite = Annotated[float, Field(allow_inf_nan=False)]
Point = tuple[Finite, Finite]
Row = Annotated[list[Finite], Field(min_length=3, max_length=3)]
Matrix = Annotated[list[Row], Field(min_length=3, max_length=3)]
MAX_PX = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


class MapFile(_Strict):
    width_px: Annotated[int, Field(gt=0, le=MAX_PX)] | None = None
    height_px: Annotated[int, Field(gt=0, le=MAX_PX)] | None = None
    width_m: Annotated[float, Field(gt=0, le=100_000)] | None = None
    height_m: Annotated[float, Field(gt=0, le=100_000)] | None = None
    pixels_per_meter: Annotated[float, Field(gt=0, le=10_000)] = 1.0
    origin_m: Point = (0.0, 0.0)
    image: str | None = None


class CameraFile(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=128)]
    name: str | None = None
    video: Any
    """Checked by ``environments._video_location`` (a path, an ``s3://`` URI or ``{"s3_prefix": ...}``)."""
    width: Annotated[int, Field(ge=0, le=MAX_PX)] = 0
    height: Annotated[int, Field(ge=0, le=MAX_PX)] = 0
    fps: Annotated[float, Field(ge=0, le=1000)] = 0.0
    image_to_map_homography: Matrix | None = None
    image_to_world_homography_m: Matrix | None = None
    point_pairs: list[tuple[Point, Point]] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        return _text(v)

    @field_validator("fps", "width", "height", mode="before")
    @classmethod
    def _null_is_unknown(cls, v: Any) -> Any:
        return 0 if v is None else v


class EnvironmentFile(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=128)]
    name: str | None = None
    description: str = ""
    map: MapFile
    cameras: Annotated[list[CameraFile], Field(min_length=1, max_length=256)]
    overlaps: list[tuple[str, str]] = []

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        return _text(v)

    @field_validator("overlaps", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        """The dataset format writes pairs as lists, possibly with extra detail after the two ids."""
        if v is None:
            return []
        if isinstance(v, list):
            return [[_text(x) for x in p[:2]] if isinstance(p, list | tuple) else p for p in v]
        return v


def _text(v: Any) -> Any:
    """Ids written as numbers are ids all the same."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def errors(exc: ValidationError, raw: dict[str, Any], limit: int = 8) -> str:
    """``field.path: message`` for each problem (the first ``limit``); a camera is named by its id."""
    lines = []
    cams = raw.get("cameras")
    for e in exc.errors()[:limit]:
        loc = list(e["loc"])
        if len(loc) >= 2 and loc[0] == "cameras" and isinstance(loc[1], int) and isinstance(cams, list):
            cam = cams[loc[1]] if loc[1] < len(cams) else None
            cid = cam.get("id") if isinstance(cam, dict) else None
            loc[:2] = [f"camera '{cid}'" if isinstance(cid, str | int) else f"cameras[{loc[1]}]"]
        lines.append(f"{'.'.join(str(p) for p in loc) or '(file)'}: {e['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")
