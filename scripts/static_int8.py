"""The static int8 quantisation both shipped int8 models go through (``quantize_nanodet.py``,
``quantize_embedder.py``): onnxruntime's pre-processing, then QDQ with per-channel int8 weights and uint8
activations, calibrated on the given inputs. Deterministic for the same model and inputs."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def quantize_qdq(
    src: Path,
    out: Path,
    inputs: list[np.ndarray],
    input_name: str = "input",
    method: str = "minmax",
    exclude: Callable[[Any], list[str]] | None = None,
) -> str:
    """Write ``out`` quantised from ``src``; ``exclude(graph)`` names nodes to leave in float. Returns its sha256."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        skip: list[str] = []
        if exclude is not None:
            import onnx

            skip = exclude(onnx.load(str(pre)).graph)
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate,
            nodes_to_exclude=skip,
            extra_options={"CalibPercentile": 99.999} if calibrate == CalibrationMethod.Percentile else {},
        )
    return hashlib.sha256(out.read_bytes()).hexdigest()
