"""Settings, read from ``SPOTON_*`` environment variables (and a ``.env`` file).

Every setting is listed, with its default, in ``.env.example``. Defaults run the product with no servers
and no network: NanoDet and EfficientNet-Lite0 on the CPU, state in-process, videos from a local folder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
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
    jpeg_quality: int = 80
    publish_queue_size: int = 8
    """Per-client bounded send queue (messages)."""
    playback_speed: float = 1.0
    """1.0 plays recorded video at its own rate as if live; 0 processes as fast as possible."""
    status_interval_s: float = 1.0

    # --- demo ----------------------------------------------------------------------------------
    demo_video: Path | None = None
    """PETS2009 S2.L1 View_001 (``vtest.avi``); default: fetched from Debian's opencv-doc package."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
