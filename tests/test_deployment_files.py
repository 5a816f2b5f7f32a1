"""docker-compose.yml and the Dockerfile, checked by parsing (no container registry is reachable here, so
images cannot be built or started): the scale-out topology, scalable workers, the GPU profile, and settings
that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app.core.config import Settings

REPO = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def stages() -> list[str]:
    return re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (REPO / "Dockerfile").read_text(), flags=re.M | re.I)


def test_compose_has_the_scale_out_topology() -> None:
    services = compose()["services"]
    assert {"spoton", "worker", "worker-gpu", "nats", "redis", "timescaledb"} <= set(services)
    assert services["spoton"]["command"] == ["spoton", "serve", "--role", "api"]
    nats = services["nats"]
    assert "-js" in nats["command"] and any(v.startswith("nats-data:") for v in nats["volumes"])
    for name in ("spoton", "worker", "worker-gpu"):
        env = services[name]["environment"]
        assert env["SPOTON_NATS_URL"] == "nats://nats:4222" and env["SPOTON_REDIS_URL"].startswith("redis://redis:")
        db = env["SPOTON_DATABASE_URL"]
        assert db.startswith("postgresql+asyncpg://") and "@timescaledb:" in db
        assert {"nats", "redis", "timescaledb"} <= set(services[name]["depends_on"])


def test_workers_scale_and_the_gpu_variant_reserves_nvidia_devices() -> None:
    services = compose()["services"]
    for name in ("worker", "worker-gpu"):
        w = services[name]
        assert w["command"] == ["spoton", "worker"]
        assert "ports" not in w and "container_name" not in w  # `--scale worker=N` needs both absent
        assert not any(str(v).split(":")[0] == "spoton-data" for v in w.get("volumes", []))  # own cache/spool
        assert w["environment"]["SPOTON_WORKER_HEALTH_PORT"] == "8000"  # what the image's HEALTHCHECK asks
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["target"] == "cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "profiles" not in services["worker"]


def test_build_targets_exist_and_the_default_image_is_the_cpu_one() -> None:
    targets = stages()
    assert targets[-1] == "cpu" and "cuda" in targets
    for name, svc in compose()["services"].items():
        if "build" in svc:
            assert svc["build"]["target"] in targets, name
    assert "nvidia/cuda" in (REPO / "Dockerfile").read_text()


def test_compose_names_only_settings_and_volumes_that_exist() -> None:
    data = compose()
    fields = {f"SPOTON_{k.upper()}" for k in Settings.model_fields}
    declared = set(data["volumes"])
    for name, svc in data["services"].items():
        for key in svc.get("environment", {}):
            if key.startswith("SPOTON_"):
                assert key in fields, f"{name}: {key} is not a setting"
        for v in svc.get("volumes", []):
            src = str(v).split(":")[0]
            if not src.startswith((".", "/")):
                assert src in declared, f"{name}: volume {src} not declared"


def test_env_example_lists_every_setting_and_only_settings() -> None:
    keys = set(re.findall(r"^(SPOTON_[A-Z0-9_]+)=", (REPO / ".env.example").read_text(), flags=re.M))
    assert keys == {f"SPOTON_{k.upper()}" for k in Settings.model_fields}
