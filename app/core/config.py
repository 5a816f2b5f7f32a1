"""Settings, read from ``SPOTON_*`` environment variables (and a ``.env`` file).

Every setting is listed, with its default, in ``.env.example``. Defaults run the product with no servers
and no network: NanoDet and EfficientNet-Lite0 on the CPU, state in-process, videos from a local folder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ByteSize, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPOTON_", env_file=".env", extra="ignore", env_ignore_empty=True)

    # --- service -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    cors_origins: str = ""
    """Comma-separated origins allowed cross-origin (REST, MJPEG, preflights); empty: CORS off. The built-in
    viewer is same-origin and needs none."""
    api_keys: str = ""
    """``role:KEY,role:KEY`` (roles: viewer, operator, admin), hashed in memory at load. Auth is on whenever keys
    are configured here or in ``api_keys_file`` (docs/security.md)."""
    api_keys_file: Path | None = None
    """JSON list of ``{"name", "role", "sha256", "environments"?}``: keys stored hashed (``spoton keys add``)."""
    auth_secret: SecretStr | None = None
    """Signs short-lived stream URLs; share it between API nodes. Empty: a random secret per process."""
    signed_url_ttl_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    ws_allowed_origins: str = ""
    """Comma-separated origins allowed to open WebSockets besides the server's own and ``cors_origins`` (browser
    pages elsewhere are refused: a page the user visits cannot open a stream from their browser)."""
    ws_auth_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    jwt_issuer: str = ""
    """OIDC/JWT bearer tokens are accepted (besides API keys) when set: the issuer (``iss``) they must name."""
    jwt_audience: str = ""
    """The audience (``aud``) tokens must name."""
    jwt_jwks_url: str = ""
    """The issuer's JSON Web Key Set (fetched and cached; one of this and ``jwt_public_key_file``)."""
    jwt_public_key_file: Path | None = None
    """A PEM public key the tokens are signed with (instead of a JWKS URL)."""
    jwt_role_claim: str = "spoton_role"
    """Claim holding the role (viewer, operator, admin; a list: the highest counts)."""
    jwt_environments_claim: str = "spoton_environments"
    """Claim holding the environment ids the token may see; absent: all."""
    max_tasks_per_key: Annotated[int, Field(ge=0)] = 0
    """Running tasks one key (or, with auth off, everyone together) may have at once; 0: no limit (409 beyond)."""
    task_starts_per_minute: Annotated[int, Field(ge=0)] = 30
    """Task starts per key per minute; 0: no limit (429 with Retry-After beyond)."""
    max_request_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    """Larger request bodies are refused with 413."""
    ws_max_clients_per_task: Annotated[int, Field(ge=0)] = 50
    """WebSocket clients of one task in this process; 0: no limit (closed with 1013, try again later, beyond)."""
    frontend_compat: bool = False
    """Serve the original SpotOn web frontend's API (docs/frontend-compat.md)."""
    frontend_aliases: str = ""
    """JSON: the frontend's environments and camera ids onto ours, e.g. ``{"campus": {"environment_id": "demo",
    "cameras": {"c01": "c1", "c02": "c2"}}}``. Empty: ``campus`` is the first environment served, ``factory``
    the second, their cameras in order as c01, c02, c03, c05 / c09, c12, c13, c16."""
    log_level: str = "INFO"
    data_dir: Path = Path("var")
    """Working data: the demo environment, caches. Created on demand."""
    environments_dir: Path = Path("environments")
    """Environment files (``*.json``) and dataset folders (``*/environment.json``) served at start-up."""
    extra_environments: list[Path] = Field(default_factory=list)
    """More environment files or dataset folders (``spoton serve --environment PATH``)."""

    # --- models --------------------------------------------------------------------------------
    detector: Literal["auto", "nanodet", "centernet", "fasterrcnn"] = "auto"
    """``auto``: Faster R-CNN when CUDA is available and its weights resolve, else NanoDet on the CPU."""
    detector_score_threshold: float = 0.35
    """NanoDet's operating threshold (CenterNet and Faster R-CNN have their own: their scores differ)."""
    detector_nms_iou: float = 0.5
    nanodet_model_path: Path | None = None
    """ONNX file of NanoDet (v0.x nanodet-g tensors); default: the one shipped in ``app/assets``."""
    nanodet_runtime: Literal["auto", "onnxruntime", "openvino"] = "auto"
    """``auto``: onnxruntime, unless ``bf16`` precision is asked for (that needs OpenVINO)."""
    nanodet_precision: Literal["auto", "fp32", "int8", "bf16"] = "auto"
    """``auto``: fp32 (bf16 with the openvino runtime where the CPU computes it natively); ``int8``: the quantised
    model; ``bf16`` needs OpenVINO. Both are faster and opt-in: they keep per-box accuracy but moved global IDF1 by
    up to 3.7 (int8) and 5.4 points (bf16). Speed and accuracy of each: docs/performance.md."""
    nanodet_input: Literal["fit", "square"] = "fit"
    """``fit``: each tile's scaled shape rounded up to multiples of 32 (a 4:3 frame: 416×320); ``square``: letterboxed
    into 416×416 as the model was trained, a third more pixels for 4:3 cameras (docs/performance.md)."""
    nanodet_input_size: int = 416
    """Longer side of a tile's network input (multiple of 32; the model was trained at 416)."""
    nanodet_tiles: Literal["auto", "1", "2"] = "auto"
    """``auto``: two overlapping tiles when the frame is wider than 4:3, else one."""
    nanodet_tile_overlap: float = 0.2
    centernet_model_path: Path | None = None
    """ONNX file of CenterNet-MobileNetV3; default: the one shipped in ``app/assets``."""
    centernet_score_threshold: float = 0.3
    """Upstream's display threshold for this model (its AP evaluation uses 0.05)."""
    centernet_tiles: Literal["auto", "1", "2", "3"] = "auto"
    """``auto``: two overlapping tiles when the frame is wider than 4:3, else one."""
    centernet_tile_overlap: float = 0.2
    fasterrcnn_variant: Literal[
        "resnet50_fpn_v2", "resnet50_fpn", "mobilenet_v3_large_fpn", "mobilenet_v3_large_320_fpn"
    ] = "resnet50_fpn_v2"
    fasterrcnn_weights: Path | None = None
    """COCO weights file (torchvision's ``.pth``); default: the torch hub cache, else a download if online."""
    fasterrcnn_download: bool = True
    """Try downloading missing weights into the torch hub cache (short timeout; offline → clear error)."""
    fasterrcnn_score_threshold: float = 0.5
    fasterrcnn_device: Literal["auto", "cuda", "cpu"] = "auto"
    fasterrcnn_precision: Literal["auto", "fp16", "fp32"] = "auto"
    """``auto``: fp16 (autocast) on CUDA, fp32 on the CPU."""
    fasterrcnn_batch_size: int = 4
    """Images per forward pass (all cameras of a global frame up to this); halved on CUDA out-of-memory."""
    fasterrcnn_min_size: int = 0
    """Shorter side the model resizes to; 0: the variant's own (800, or 320 for ``mobilenet_v3_large_320_fpn``)."""
    fasterrcnn_max_size: int = 0
    """Longer-side cap; 0: the variant's own (1333, or 640)."""
    embedder: Literal["auto", "efficientnet_lite0", "part_colour", "fused", "clip"] = "auto"
    """``auto``: ``fused``. ``part_colour``: clothing colour per body part (no weights). ``fused``: part colour
    and EfficientNet-Lite0 in one vector. ``efficientnet_lite0``: ImageNet features alone (embedded weights).
    ``clip``: CLIP's image tower (weights below)."""
    embedder_batch_size: int = 64
    embedder_runtime: Literal["auto", "torch", "onnxruntime"] = "auto"
    """EfficientNet-Lite0 on the CPU: ``auto`` = onnxruntime (the same numbers, faster; exported once into
    ``<data_dir>/models``); on CUDA it is always PyTorch."""
    embedder_precision: Literal["auto", "fp32", "int8"] = "auto"
    """EfficientNet-Lite0: ``auto`` = fp32 on the CPU, fp16 on CUDA; ``int8``: the shipped quantised network on the
    CPU with onnxruntime (1.6× faster; identity within a point, but fewer re-entries kept; docs/performance.md)."""
    embedder_colour_weight: Annotated[float, Field(ge=0.0, le=1.0)] = 0.7
    """``fused``: share of the part-colour descriptor in the cosine (the rest is EfficientNet-Lite0)."""
    crop_photometry: Literal["levels", "none"] = "levels"
    """What the identity descriptors (compared across cameras) see of each camera's colours: ``levels``, each
    colour channel stretched between the camera's own darkest and brightest values (undoes per-camera white
    balance, contrast and exposure; the trackers' crops, detection and the streamed frames are untouched);
    ``none``: crops as recorded (docs/accuracy.md)."""
    crop_levels_clip_pct: Annotated[float, Field(ge=0.0, lt=50.0)] = 0.5
    """``levels``: share of each channel's pixels (per cent, at either end) clipped to black or white."""
    clip_model: str = "ViT-B-16"
    """open_clip architecture of the ``clip`` embedder."""
    clip_pretrained: str = "openai"
    """open_clip pretrained tag, fetched into its hub cache when ``clip_download`` (and online)."""
    clip_weights: Path | None = None
    """Local open_clip checkpoint of ``clip_model``; wins over ``clip_pretrained``."""
    clip_download: bool = True
    torch_threads: int = 0
    """0: let the runtime decide (all cores)."""
    onnx_threads: int = 0

    # --- tracking and identity -----------------------------------------------------------------
    tracker_track_high_thresh: float = 0.5
    tracker_track_low_thresh: float = 0.1
    tracker_new_track_thresh: float = 0.6
    tracker_track_buffer: int = 30
    tracker_match_thresh: float = 0.8
    tracker_second_match_thresh: float = 0.5
    """Largest IoU distance (1 − IoU) at which a track still being followed takes a low-score detection (BoT-SORT's
    second pass; BoxMOT's default)."""
    tracker_appearance_thresh: float = 0.25
    tracker_proximity_thresh: float = 0.5
    tracker_use_appearance: bool = True
    """Feed appearance to BoT-SORT's matching (docs/accuracy.md: PETS IDF1 69.6 → 84.8, the multi-view sets
    unchanged on average)."""
    tracker_appearance_embedder: Literal["part_colour", "identity"] = "part_colour"
    """What the trackers compare: ``part_colour``, clothing colour per body part of every detection (about
    0.1 ms a crop; the identity embedder still runs only on the crops the registry needs), or ``identity``, the
    identity embedder on every detection (same scores on PETS, ~6× the embedding time on the CPU)."""
    map_cut_box_aspect: Annotated[float, Field(ge=0.0)] = 2.6
    """A box cut off by the image's bottom edge gets its foot point where a whole box this many times its width
    tall would end (0: at the edge, as if it were the feet); docs/accuracy.md."""
    reid_embed_every_n: int = 5
    """A tracked person's crop is embedded on its first frames (``reid_embed_first_n``) and then every N-th frame
    (gallery refresh)."""
    reid_embed_first_n: Annotated[int, Field(ge=1)] = 10
    """A new track's crop is embedded on each of its first N frames with a detection while its person still wants
    looks (a new or little-seen identity: re-entry linking needs a few; docs/accuracy.md)."""
    reid_match_threshold: float = 0.85
    """Re-appearance of a person no camera has seen for ``reid_lost_after_s``: minimum similarity of the new
    track's appearance to the identity's gallery (mean of the best three cosine similarities)."""
    reid_max_map_distance_m: float = 1.0
    """Two tracks seen at the same time in overlapping cameras can be one person only this close."""
    reid_gallery_size: int = 20
    reid_identity_ttl_s: float = 60.0
    # Identity rules (app/services/identity); how each default was chosen: docs/accuracy.md.
    reid_max_speed_mps: float = 3.0
    """Fastest plausible walk between a sighting and a later one (travel-time gate between cameras)."""
    reid_proximity_weight: float = 0.3
    """Weight of walking-reach plausibility when ranking re-appearance candidates."""
    reid_appearance_weight: float = 0.5
    """Weight of appearance next to track continuity and map agreement."""
    reid_switch_frames: int = 2
    """Hysteresis: frames in a row a track's same-spot group must point to another identity before it follows."""
    reid_last_track_switch_frames: Annotated[int, Field(ge=1)] = 5
    """The same for the last track of a person shown for over 2 s, whose move merges that person into another:
    two people side by side, one seen by a single camera, stay two when their sightings fall into one group for a
    few frames (≤ ``reid_switch_frames``: as any track; docs/accuracy.md)."""
    reid_lost_after_s: float = 2.0
    """An identity no camera has seen this long is reported ``lost``; before that a new track near where it
    was seen continues it, after that only appearance (``reid_match_threshold``) can bring it back."""
    reid_looks_against_log_odds: float = -1.0
    """Learnt appearance evidence (log-odds; 0 until the scene is calibrated) below this speaks against handing a
    camera's new track to a known person: it neither joins the person another camera sees nearby
    (``reid_birth_radius_m``) nor continues one lost < ``reid_lost_after_s`` ago where they were (a stranger
    entering where someone walked out of view). -99: place and time alone decide. docs/accuracy.md."""
    reid_camera_centring: bool = True
    """Compare appearance with each camera's running mean descriptor removed (its colour rendering)."""
    reid_reentry: bool = True
    """Link a new identity to one seen before when the evidence says so (people who leave every view and come
    back; `app.services.identity.reentry`; measured in docs/accuracy.md)."""
    reid_reentry_window_s: Annotated[float, Field(gt=0)] = 6.0
    """How long after appearing a new identity may still be linked to an earlier one."""
    reid_reentry_max_gap_s: Annotated[float, Field(gt=0)] = 60.0
    """Longest time out of every view a link may bridge (identities are forgotten after
    ``reid_identity_ttl_s`` anyway)."""
    reid_reentry_link_log_odds: float = 2.0
    """Evidence a link needs: log-likelihood ratio of position-after-the-gap plus looks (2.0 ≈ 7 : 1; 2.5 before
    each camera's colours were levelled, when looks said less; docs/accuracy.md)."""
    reid_reentry_margin: Annotated[float, Field(ge=0.0)] = 1.0
    """A link must lead the runner-up on either side by this many log-odds."""
    reid_reentry_closing_log_odds: float = 1.0
    """When a new identity's window closes, a link on this much evidence suffices if it leads every other option of
    both sides by ``reid_reentry_closing_margin`` (a returner who turned back out of sight or came back long after:
    little by position, yet the only one it could be; docs/accuracy.md). At or above ``reid_reentry_link_log_odds``
    (e.g. 99): off."""
    reid_reentry_closing_margin: Annotated[float, Field(ge=0.0)] = 3.0
    """The lead over every other option of both sides that such a last-chance link needs (1.0 for the usual)."""
    reid_looks_prior_pairs: Annotated[int, Field(ge=0)] = 24
    """How many pairs of the scene's own the looks' starting calibration weighs as (`LOOKS_PRIORS`, fitted on other
    scenes, for the camera-centred ``fused`` descriptor): looks count from a task's first seconds instead of after
    some 8–20 s, and the scene's own pairs take over as they come (docs/accuracy.md). 0, another embedder or no
    camera centring: looks wait for the scene's own pairs."""
    reid_swap_log_odds: float = 6.0
    """Two people who came within 2 m and now each look like the other did (learnt appearance log-odds for
    "swapped" over "as they are", both identities together) get their identities back (`crossings`; ≤ 0: off;
    docs/accuracy.md)."""
    reid_confirm_frames: Annotated[int, Field(ge=1)] = 3
    """A new person who could still be someone who left (re-entry linking weighs a candidate) is shown (tracks
    reported with their global id, ``created`` announced) from the frame they have been seen in this many frames,
    unless linked before; until then their tracks are left out of ``tracking_update``: a returner recognised
    within those frames, or a false detection living a frame or two, never shows an id of its own; so is a new
    identity split off a known person's track in a crowd, whoever left (1: at once; docs/accuracy.md)."""
    reid_continuity_radius_m: Annotated[float, Field(ge=0.0)] = 3.0
    """Sightings by different cameras whose tracks all carry one person stay that person while their map
    positions agree within this, beyond ``reid_max_map_distance_m`` (0 or ≤ that: off); docs/accuracy.md."""
    reid_birth_radius_m: Annotated[float, Field(ge=0.0)] = 2.0
    """A camera's brand-new track joins the person other cameras see within this of it, when its camera shows no
    track of that person this frame and learnt appearance is not against it (0 or ≤ ``reid_max_map_distance_m``:
    off); docs/accuracy.md."""
    reid_continuation_doubt_mps: Annotated[float, Field(ge=0.0)] = 2.0
    """A new track far from where a person was lost < ``reid_lost_after_s`` ago (a walk faster than this) does not
    continue them when someone else who left was last seen within ``reid_continuation_doubt_radius_m`` of it: it
    starts as a newcomer and re-entry linking weighs both (0: off; docs/accuracy.md)."""
    reid_continuation_doubt_radius_m: Annotated[float, Field(gt=0.0)] = 0.7
    """How close "where someone else left" is for ``reid_continuation_doubt_mps``."""
    still_object_after_s: Annotated[float, Field(ge=0.0)] = 5.0
    """A track whose box has not moved (IoU with its first box ≥ ``still_object_min_iou``) for this many seconds
    is a thing, not a person (a post or sprinkler the detector fires on): it is no longer reported, and tracks
    born on its spot never are (`app.services.still_objects`; 0: off; docs/accuracy.md)."""
    still_object_min_iou: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    """How still "not moved" is: people's boxes drift below IoU 0.75 within 5 s, even standing."""
    reid_gallery_min_quality: float = 0.5
    """Appearance is learnt only from detections at least this confident (and not overlapped)."""
    reid_event_log_size: int = 1000
    """Identity events kept in memory per task."""

    # --- pipeline ------------------------------------------------------------------------------
    max_concurrent_tasks: int = 2
    finished_tasks_kept: Annotated[int, Field(ge=0)] = 100
    """Ended tasks this process remembers (status, stats); older ones are forgotten (history keeps them)."""
    playback_speed: float = 1.0
    """1.0 plays recorded video at its own rate as if live, 2.0 twice as fast; ``max`` (or 0) processes every
    frame as fast as possible (offline runs)."""
    read_ahead_frames: int = 4
    """Decoded global frames waiting for the models, at most (bounds latency and memory)."""
    detect_ahead: Literal["auto", "on", "off"] = "auto"
    """Detect the next global frame (once it is due) while the current one is tracked and identified, on a second
    thread. Same results; on two CPU cores it buys ~6 % throughput unpaced but, played as if live, raises latency
    (p99 +260 ms) for no throughput, because the overlapped stages slow each other (docs/performance.md). ``auto``:
    on only when playback is unpaced (``SPOTON_PLAYBACK_SPEED=max``)."""
    detect_regions: bool = True
    """Run the detector only around the people already found and new motion in each camera's frame, at the
    scale of a full look, with a full look every ``detect_regions_full_every`` frames (`RegionPlanner`; 1.15×
    the pipeline's frames/s with the same accuracy: docs/performance.md). NanoDet with a fitted input only;
    other detectors always look at whole frames."""
    detect_regions_full_every: Annotated[int, Field(ge=1)] = 8
    detect_max_person_px: Annotated[float, Field(ge=0.0)] = 96.0
    """Per camera, the detector input shrinks (in steps of 32, from ``nanodet_input_size``) until the median height
    of the people its tracks match is at most this many network pixels: NanoDet scores people that look larger low
    (close views; `app.services.detector_scale`, docs/accuracy.md). 0: every camera at the model's size."""
    detect_min_person_px: Annotated[float, Field(ge=0.0)] = 48.0
    """Per camera, the detector input grows (in steps of 32, up to ``detect_max_input_size``) until the median height
    of the people its tracks match is at least this many network pixels: NanoDet misses or scores low people who
    look smaller (far views: PETS' 42-px people; cameras whose people stand about 60 px gain nothing, and at 56 some
    of them grew; docs/accuracy.md). 0: never enlarged."""
    detect_max_input_size: Annotated[int, Field(ge=128, le=1024, multiple_of=32)] = 512
    """Largest detector input a far camera is enlarged to: its cost grows with the square (512: 1.5× the pixels of
    416)."""
    detect_regions_margin: Annotated[int, Field(ge=0, le=416)] = 48
    """Network-input pixels of context around each region (48: the boxes of a full look; less is cheaper and
    loses weak boxes: docs/performance.md)."""
    motion_gate: bool = False
    """Skip detection on camera frames where nothing moved and reuse the previous boxes (docs/performance.md)."""
    motion_gate_min_changed: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.002
    """Share of a 160×120 grey thumbnail's pixels that must change for the detector to run."""
    motion_gate_pixel_delta: Annotated[int, Field(ge=1, le=255)] = 12
    """Grey levels a pixel must change by to count as changed."""
    motion_gate_max_skip: Annotated[int, Field(ge=0)] = 4
    """Frames in a row a camera may reuse boxes before the detector runs anyway."""
    encode_workers: int = 2
    """Threads encoding JPEGs while the models work on the next frame."""
    jpeg_encoder: Literal["simplejpeg", "opencv"] = "simplejpeg"
    """Both are libjpeg-turbo at 4:2:0; compare with ``spoton bench jpeg``."""
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

    # --- videos in S3 and the local video cache ------------------------------------------------
    s3_endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, DagsHub, …); empty: AWS."""
    s3_region: str | None = None
    """Empty: the standard AWS chain (``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``~/.aws/config``)."""
    s3_bucket: str | None = None
    """Bucket of cameras whose ``video`` is ``{"s3_prefix": ...}`` without a bucket of its own."""
    s3_access_key_id: str | None = None
    """Empty: the standard AWS credential chain (environment, ``~/.aws``, instance role)."""
    s3_secret_access_key: SecretStr | None = None
    s3_session_token: SecretStr | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """``path`` for most self-hosted stores (MinIO) and IP endpoints."""
    s3_connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    s3_stall_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """A download that receives no byte for this long is dropped and resumed."""
    s3_download_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    """One sub-video (or listing), retries included, fails with a clear error after this long."""
    s3_retry_backoff_s: Annotated[float, Field(gt=0)] = 0.5
    """First retry delay; doubles per attempt (jittered), at most 16 s."""
    s3_max_concurrent_downloads: Annotated[int, Field(ge=1)] = 4
    s3_verify_md5: bool = True
    """Check a download against its ETag when the ETag is a plain MD5 (single-part, unencrypted upload)."""
    video_cache_dir: Path | None = None
    """Downloaded sub-videos; empty: ``<data_dir>/video-cache``. One server per directory."""
    video_cache_max_size: Annotated[ByteSize, Field(gt=0)] = ByteSize(10 * 2**30)
    """Bound of the video cache (``10GiB``, ``500MB``, bytes); least recently used files go first."""
    video_prefetch: Annotated[int, Field(ge=0)] = 1
    """Sub-videos fetched ahead of the one playing, per camera."""

    # --- live state (app/stores: in-process, or Redis shared by several API processes) ---------
    redis_url: str | None = None
    """``redis://host:6379/0``: live state and frame fan-out in Redis, so any API process sharing it can
    stream and report a task that runs in another; empty: in-process (one API process)."""
    redis_key_prefix: str = "spoton"
    """Keys and channels are ``<prefix>:task:<id>...``; give deployments sharing one Redis their own."""
    redis_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    """Connect/command timeout; also how long a task start waits for other processes to see the task."""
    live_state_ttl_s: Annotated[float, Field(gt=0)] = 3600.0
    """A task's live state (status, latest frames, tracks) is kept this long after its last write."""
    live_publish_queue_size: Annotated[int, Field(ge=1)] = 256
    """Frames/messages waiting for Redis before the oldest are dropped (publishing never waits on Redis)."""
    live_owner_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """Clients following a task from another process are closed (1011) when that process has not
    refreshed its heartbeat for this long (it crashed or lost Redis)."""

    # --- scale-out (app/services/cluster: NATS JetStream; docs/scale-out.md) --------------------
    nats_url: str | None = None
    """``nats://host:4222``: tasks go through a JetStream work queue to ``spoton worker`` processes (needs
    ``redis_url`` and a shared ``database_url``); empty: every task runs in the API process that started it."""
    nats_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")] = "spoton"
    """Names the stream (``<PREFIX>_TASKS``), subjects, KV buckets and object store; one per deployment."""
    role: Literal["", "api", "worker", "all"] = ""
    """Set by ``spoton serve --role`` / ``spoton worker``; empty: ``all`` with ``nats_url``, else single-process."""
    worker_id: str = ""
    """This worker's name in ``GET /api/v1/workers`` and task status; empty: ``<host>-<pid>``."""
    worker_slots: Annotated[int, Field(ge=1, le=64)] = 1
    """Tasks one worker runs at once (it pulls another only with a free slot and, on GPU, the memory for it)."""
    worker_health_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """A worker answers ``GET /health`` on this port (at ``host``), for container probes; 0: no HTTP at all."""
    worker_heartbeat_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    """How often a worker publishes its load; it counts as gone after three missed beats."""
    task_lease_s: Annotated[float, Field(ge=1, le=600)] = 10.0
    """A running task's lease (JetStream ack wait): a worker that stops renewing it for this long loses the
    task to another worker, which resumes it from the last checkpoint."""
    task_max_deliver: Annotated[int, Field(ge=1, le=100)] = 5
    """Deliveries of a task (first start, re-queues after a lost lease or a hand-back) before it FAILS."""
    checkpoint_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """How often a worker checkpoints a running task (after its history is committed): at most this much
    video is processed twice after a crash."""
    task_record_ttl_s: Annotated[float, Field(ge=60)] = 86_400.0
    """Task records and checkpoints in JetStream live this long after their last write (running tasks
    refresh theirs)."""

    # --- history (app/stores/history: PostgreSQL/TimescaleDB, or an embedded SQLite file) --------
    database_url: str | None = None
    """``postgresql+asyncpg://user:pass@host:5432/db``; empty: SQLite in ``<data_dir>/spoton.db``."""
    history_enabled: bool = True
    """Record tracking events, identity events and task runs (and serve the analytics API)."""
    history_auto_migrate: bool = True
    """Bring the schema to the latest migration at start-up (else run ``spoton db upgrade`` yourself)."""
    history_batch_size: Annotated[int, Field(ge=1)] = 500
    """Records per insert transaction."""
    history_flush_interval_s: Annotated[float, Field(gt=0)] = 1.0
    """A partial batch is written at least this often."""
    history_buffer_size: Annotated[int, Field(ge=1)] = 20_000
    """Records held in memory; when full (the database is slow) the buffer goes to the disk spool at once."""
    history_spool_dir: Path | None = None
    """Batches the database could not take, until they are replayed; empty: ``<data_dir>/spool``."""
    history_retry_s: Annotated[float, Field(gt=0)] = 1.0
    """First reconnect delay while the database is unreachable; doubles up to ``history_retry_max_s``."""
    history_retry_max_s: Annotated[float, Field(gt=0)] = 30.0
    history_connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    history_write_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """A batch not committed in this time counts as an outage (spooled; replays are idempotent)."""
    history_retention_days: Annotated[int, Field(ge=1)] = 90
    """TimescaleDB only: chunks older than this are dropped."""
    history_compress_after_days: Annotated[int, Field(ge=1)] = 7
    """TimescaleDB only: tracking chunks older than this are compressed."""

    # --- demo ----------------------------------------------------------------------------------
    demo_video: Path | None = None
    """PETS2009 S2.L1 View_001 (``vtest.avi``); default: fetched from Debian's opencv-doc package."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
