"""Settings, read from ``SPOTON_*`` environment variables (and a ``.env`` file).

Every setting is listed, with its default, in ``.env.example``. Defaults run the product with no servers
and no network: NanoDet and EfficientNet-Lite0 on the CPU, state in-process, videos from a local folder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPOTON_", env_file=".env", extra="ignore", env_ignore_empty=True)

    # --- service -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    data_dir: Path = Path("var")
    """Working data: the demo environment, caches. Created on demand."""
    environments_dir: Path = Path("environments")
    """Environment files (``*.json``) and dataset folders (``*/environment.json``) served at start-up."""
    extra_environments: list[Path] = Field(default_factory=list)
    """More environment files or dataset folders (``spoton serve --environment PATH``)."""

    # --- models --------------------------------------------------------------------------------
    detector: Literal["auto", "nanodet"] = "auto"
    detector_score_threshold: float = 0.35
    detector_nms_iou: float = 0.5
    nanodet_model_path: Path | None = None
    """ONNX file of NanoDet (v0.x nanodet-g tensors); default: the one shipped in ``app/assets``."""
    nanodet_tiles: Literal["auto", "1", "2"] = "auto"
    """``auto``: two overlapping tiles when the frame is wider than 4:3, else one."""
    nanodet_tile_overlap: float = 0.2
    embedder: Literal["auto", "efficientnet_lite0"] = "auto"
    embedder_batch_size: int = 64
    torch_threads: int = 0
    """0: let the runtime decide (all cores)."""
    onnx_threads: int = 0

    # --- tracking and identity -----------------------------------------------------------------
    tracker_track_high_thresh: float = 0.5
    tracker_track_low_thresh: float = 0.1
    tracker_new_track_thresh: float = 0.6
    tracker_track_buffer: int = 30
    tracker_match_thresh: float = 0.8
    tracker_appearance_thresh: float = 0.25
    tracker_proximity_thresh: float = 0.5
    reid_match_threshold: float = 0.6
    """Minimum cosine similarity for a new track to join an existing global identity by appearance."""
    reid_max_map_distance_m: float = 1.5
    """Two tracks seen at the same time in overlapping cameras can be one person only this close."""
    reid_gallery_size: int = 20
    reid_identity_ttl_s: float = 60.0

    # --- pipeline ------------------------------------------------------------------------------
    max_concurrent_tasks: int = 2
    playback_speed: float = 1.0
    """1.0 plays recorded video at its own rate as if live, 2.0 twice as fast; ``max`` (or 0) processes every
    frame as fast as possible (offline runs)."""
    read_ahead_frames: int = 4
    """Decoded global frames waiting for the models, at most (bounds latency and memory)."""
    encode_workers: int = 2
    """Threads encoding JPEGs while the models work on the next frame."""
    jpeg_quality: int = 80
    """Starting JPEG quality; adapts between the bounds below to pipeline load."""
    jpeg_quality_min: int = 50
    jpeg_quality_max: int = 85
    jpeg_low_scale: float = 0.5
    """Clients that cannot keep up get frames downscaled by this factor at ``jpeg_quality_min``."""
    publish_queue_size: int = 32
    """JSON messages a WebSocket client may have queued before its oldest are dropped."""
    ws_send_timeout_s: float = 5.0
    """A send that does not complete in this time closes the client (code 4408)."""
    ws_slow_client_close_s: float = 10.0
    """A client that stays behind (its frames keep being replaced) this long is closed (code 4429)."""
    status_interval_s: float = 1.0

    @field_validator("playback_speed", mode="before")
    @classmethod
    def _speed(cls, v: object) -> object:
        if isinstance(v, str) and v.strip().lower() == "max":
            return 0.0
        return v

    # --- demo ----------------------------------------------------------------------------------
    demo_video: Path | None = None
    """PETS2009 S2.L1 View_001 (``vtest.avi``); default: fetched from Debian's opencv-doc package."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
