"""The environments a server offers: every file in the environments folder plus those named at start.

A broken file is reported (logged and shown in ``/health``) and skipped, never fatal: one bad calibration
must not take the other environments down.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.services.environments import (
    EnvironmentError_,
    EnvironmentSpec,
    discover_environments,
    load_environment,
)

log = logging.getLogger(__name__)


class EnvironmentCatalog:
    def __init__(self) -> None:
        self._envs: dict[str, EnvironmentSpec] = {}
        self.errors: list[str] = []

    @classmethod
    def from_paths(cls, directory: Path | None, extra: list[Path]) -> EnvironmentCatalog:
        cat = cls()
        paths = (discover_environments(directory) if directory else []) + list(extra)
        for p in paths:
            cat.load(p)
        return cat

    def load(self, path: Path) -> EnvironmentSpec | None:
        try:
            env = load_environment(path)
        except (EnvironmentError_, OSError) as exc:
            self.errors.append(str(exc))
            log.error("environment %s skipped: %s", path, exc)
            return None
        self.add(env)
        return env

    def add(self, env: EnvironmentSpec) -> None:
        if env.id in self._envs:
            log.warning("environment id %s from %s replaces %s", env.id, env.source, self._envs[env.id].source)
        self._envs[env.id] = env
        log.info("environment %s: %d cameras (%s)", env.id, len(env.cameras), env.source)

    def get(self, env_id: str) -> EnvironmentSpec | None:
        return self._envs.get(env_id)

    def all(self) -> list[EnvironmentSpec]:
        return list(self._envs.values())

    def summary(self) -> dict[str, Any]:
        errs = [
            c.reprojection_error_px / e.map.pixels_per_meter
            for e in self._envs.values()
            for c in e.cameras.values()
            if c.reprojection_error_px is not None
        ]
        return {
            "environments": len(self._envs),
            "cameras": sum(len(e.cameras) for e in self._envs.values()),
            "max_reprojection_error_m": round(max(errs), 4) if errs else None,
        }
