"""Adaptive JPEG quality: cheaper, smaller frames while the pipeline is behind, better ones when it is not."""

from __future__ import annotations


class QualityController:
    """Steps quality down when frames were skipped in the last interval, back up after calm intervals.

    Skipped frames are the honest signal of overload: the pipeline could not keep the video's pace. Quality
    rises only after several calm intervals, so it does not oscillate around the limit.
    """

    def __init__(self, start: int, low: int, high: int, step: int = 5, calm_intervals: int = 3) -> None:
        if not 1 <= low <= high <= 100:
            raise ValueError(f"JPEG quality bounds must satisfy 1 <= min <= max <= 100, got {low}..{high}")
        self.low, self.high, self.step = low, high, step
        self.quality = min(high, max(low, start))
        self._calm_needed = calm_intervals
        self._calm = 0

    def update(self, skipped_in_interval: int) -> int:
        if skipped_in_interval > 0:
            self.quality = max(self.low, self.quality - self.step)
            self._calm = 0
        else:
            self._calm += 1
            if self._calm >= self._calm_needed:
                self.quality = min(self.high, self.quality + self.step)
                self._calm = 0
        return self.quality
