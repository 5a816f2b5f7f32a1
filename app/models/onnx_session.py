"""One way to open an ONNX model on the CPU, shared by the onnxruntime detectors."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """Fully optimised, sequential graph; ``threads`` > 0 caps intra-op threads (0: onnxruntime's default).

    One inter-op thread: the graphs are chains, and the pipeline already overlaps decode and encode with them.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads > 0:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
