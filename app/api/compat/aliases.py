"""The frontend's fixed environments (``campus``, ``factory``) and camera ids mapped onto ours."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from app.services.environment_catalog import EnvironmentCatalog

DEFAULT_CAMERAS = {"campus": ["c01", "c02", "c03", "c05"], "factory": ["c09", "c12", "c13", "c16"]}
DISPLAY = {"campus": "Campus", "factory": "Factory"}
TARGET_W, TARGET_H = 1920, 1080


class AliasError(ValueError):
    """``SPOTON_FRONTEND_ALIASES`` that cannot be used; the message says why."""


@dataclass(slots=True)
class EnvironmentAlias:
    alias: str
    environment_id: str
    cameras: dict[str, str] = field(default_factory=dict)
    """Frontend camera id → our camera id, in the frontend's order."""

    def ours(self, camera_id: str) -> str | None:
        return self.cameras.get(camera_id)

    def theirs(self, camera_id: str) -> str | None:
        return next((a for a, c in self.cameras.items() if c == camera_id), None)


class AliasTable:
    def __init__(self, aliases: list[EnvironmentAlias]) -> None:
        self.aliases = {a.alias: a for a in aliases}

    @classmethod
    def build(cls, raw: str, catalog: EnvironmentCatalog) -> AliasTable:
        """From ``SPOTON_FRONTEND_ALIASES`` (checked against the environments served), or the defaults."""
        envs = catalog.all()
        if not raw.strip():
            out = []
            for alias, env in zip(DEFAULT_CAMERAS, envs, strict=False):
                cams = dict(zip(DEFAULT_CAMERAS[alias], env.cameras, strict=False))
                out.append(EnvironmentAlias(alias, env.id, cams))
            return cls(out)
        try:
            table = json.loads(raw)
        except ValueError as exc:
            raise AliasError(f"SPOTON_FRONTEND_ALIASES is not JSON: {exc}") from None
        if not isinstance(table, dict):
            raise AliasError("SPOTON_FRONTEND_ALIASES must be an object: {alias: {environment_id, cameras}}")
        known = {e.id: e for e in envs}
        out = []
        for alias, spec in table.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("environment_id"), str):
                raise AliasError(f"alias '{alias}': needs an environment_id")
            target = known.get(spec["environment_id"])
            if target is None:
                raise AliasError(f"alias '{alias}': environment '{spec['environment_id']}' is not served")
            cams = spec.get("cameras") or dict(zip(DEFAULT_CAMERAS.get(alias, []), target.cameras, strict=False))
            if not isinstance(cams, dict) or any(c not in target.cameras for c in cams.values()):
                raise AliasError(f"alias '{alias}': cameras must map frontend ids onto cameras of '{target.id}'")
            out.append(EnvironmentAlias(alias, target.id, {str(k): str(v) for k, v in cams.items()}))
        return cls(out)

    def get(self, alias: str) -> EnvironmentAlias | None:
        return self.aliases.get(alias)

    def for_environment(self, environment_id: str) -> EnvironmentAlias | None:
        return next((a for a in self.aliases.values() if a.environment_id == environment_id), None)


@dataclass(slots=True, frozen=True)
class Letterbox:
    """A ``width``×``height`` frame placed in a 16:9 canvas (bars where the aspect differs), then scaled so
    boxes can be given in 1920×1080 as the frontend assumes."""

    width: int
    height: int

    @property
    def canvas(self) -> tuple[int, int]:
        w, h = self.width, self.height
        if w * 9 >= h * 16:
            return w, max(h, round(w * 9 / 16))
        return round(h * 16 / 9), h

    @property
    def offset(self) -> tuple[float, float]:
        cw, ch = self.canvas
        return (cw - self.width) / 2, (ch - self.height) / 2

    @property
    def needed(self) -> bool:
        return self.canvas != (self.width, self.height)

    def box(self, xyxy: tuple[float, float, float, float] | list[float]) -> list[float]:
        cw, ch = self.canvas
        ox, oy = self.offset
        sx, sy = TARGET_W / cw, TARGET_H / ch
        x1, y1, x2, y2 = xyxy
        return [round((x1 + ox) * sx, 1), round((y1 + oy) * sy, 1), round((x2 + ox) * sx, 1), round((y2 + oy) * sy, 1)]
