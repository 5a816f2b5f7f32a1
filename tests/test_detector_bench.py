"""``spoton bench detector``: it measures every requested detector case and reports consistent figures
(no timing thresholds: the machine's speed is not under test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.bench.detector_bench import parse_resolution, run_detector_bench, synthetic_frame
from app.cli import main
from app.core.config import Settings


def test_resolutions_and_frames() -> None:
    assert parse_resolution("1080p") == ("1080p", (1920, 1080))
    assert parse_resolution("800x600") == ("800x600", (800, 600))
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_resolution("big")
    a, b = synthetic_frame(64, 48), synthetic_frame(64, 48)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_every_case_is_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no weights: Faster R-CNN runs with random ones
    settings = Settings(fasterrcnn_variant="mobilenet_v3_large_320_fpn", fasterrcnn_device="cpu")
    cases = run_detector_bench(settings, ["centernet", "fasterrcnn"], [1, 2], ["480p"], iterations=2,
                               max_seconds=0.0)
    assert [(c.detector, c.batch) for c in cases] == [("centernet", 1), ("centernet", 2), ("fasterrcnn", 1),
                                                      ("fasterrcnn", 2)]
    for c in cases:
        assert c.iterations == 2 and c.resolution == "480p"
        assert 0 < c.ms_per_image_median <= c.ms_per_image_p95
        assert c.images_per_s == pytest.approx(1000 * c.batch / c.ms_per_call_median, rel=0.01)
    frcnn = cases[-1]
    assert frcnn.weights == "random" and "random weights" in frcnn.model and frcnn.precision == "fp32"
    with pytest.raises(ValueError, match="unknown detector"):
        run_detector_bench(settings, ["hog"])


def test_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "detector", "--detectors", "nanodet", "--batch", "1", "--resolution", "480p",
                 "--iterations", "2", "--max-seconds", "0", "--json", str(out)])
    assert code == 0
    assert "ms/image median" in capsys.readouterr().out
    data = json.loads(out.read_text())
    # one case per runtime × precision this machine runs (fp32 on onnxruntime always; int8 with its model)
    assert {c["detector"] for c in data["cases"]} == {"nanodet"}
    assert {(c["weights"], c["precision"]) for c in data["cases"]} >= {
        ("shipped, onnxruntime, input=fit", "fp32"),
        ("shipped, onnxruntime, input=square", "fp32"),
        ("shipped, onnxruntime, input=fit", "int8"),
    }
    assert data["machine"]["cpu_count"] >= 1
    assert main(["bench", "detector", "--batch", "one"]) == 2
