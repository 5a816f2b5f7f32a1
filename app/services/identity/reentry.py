"""Re-entry: a person who left every view and comes back gets their old global id, when the evidence says so.

A new identity starts *tentative*. For ``window_s`` after it appears it may still turn out to be someone seen
before: once it has ``min_samples`` appearance samples, its mean appearance is compared with that of every
identity that was already gone when it appeared (a person cannot be in two places at once) and that could have
walked from where they vanished to where it appeared. It is linked to the best of them only when

* the similarity is above what *different* people score in this scene — the ``quantile`` of the similarities
  of identities seen at the same time in different places, collected while the task runs (calibrated online,
  per task; no fixed threshold tuned to one data set), and never below ``floor``;
* and it beats the runner-up by ``margin`` (a choice between look-alikes is not made on noise).

Otherwise it stays a new person: the "new person" outcome is explicit, never forced. A link happens seconds
after the person reappeared, so the first few frames went out under the tentative id; the link is reported as
an identity ``merged`` event, and history analytics count the person once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from app.models.base import FloatArray


@dataclass(slots=True, frozen=True)
class ReentryConfig:
    window_s: float = 4.0
    """How long after appearing a new identity may still be linked to an earlier one."""
    min_samples: int = 3
    """Appearance samples a new identity needs before it is compared."""
    quantile: float = 0.95
    """Share of different-person pairs of this scene that a link's similarity must exceed."""
    floor: float = 0.2
    """Lowest similarity (of camera-centred appearance means) that can ever link."""
    margin: float = 0.05
    """Lead over the second-best candidate."""
    min_negatives: int = 20
    """Different-person pairs needed before any link (no calibration, no link)."""
    max_negatives: int = 2000
    near_speed_mps: float = 1.5
    """Near re-appearance: a typical walking speed (not the fastest plausible one) ..."""
    near_max_gap_s: float = 10.0
    """... over at most this gap: someone who vanished (occlusion, missed detections) and shows up again where
    they could have walked at that pace, with no one else who could, continues — unless appearance says the two
    are less alike than the scene's typical different-person pair."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError("reentry quantile must be in [0.5, 1)")
        if self.window_s <= 0 or self.min_samples < 1 or self.min_negatives < 1 or self.max_negatives < 1:
            raise ValueError("reentry window, samples and negative counts must be positive")


class AppearanceMean:
    """Running mean of an identity's (unit) appearance vectors: fixed memory however long it is seen."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, vector: FloatArray) -> None:
        v = np.asarray(vector, np.float64).reshape(-1)
        self.total = v.copy() if self.total is None else self.total + v
        self.count += 1

    def absorb(self, other: AppearanceMean) -> None:
        if other.total is None:
            return
        self.total = other.total.copy() if self.total is None else self.total + other.total
        self.count += other.count

    def unit(self) -> np.ndarray | None:
        if self.total is None:
            return None
        norm = float(np.linalg.norm(self.total))
        return self.total / norm if norm > 1e-9 else None


class DifferentPeopleSimilarities:
    """Similarities of identities seen at the same time in different places — pairs that are certainly two
    people — one value per pair (its latest), the newest ``capacity`` pairs kept."""

    def __init__(self, capacity: int = 2000) -> None:
        self.capacity = capacity
        self._pairs: OrderedDict[tuple[int, int], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pairs)

    def observe(self, means: dict[int, np.ndarray]) -> None:
        """``means``: unit appearance means of identities seen now, each in its own place."""
        gids = sorted(means)
        if len(gids) < 2:
            return
        m = np.stack([means[g] for g in gids])
        sims = m @ m.T
        for i in range(len(gids)):
            for j in range(i + 1, len(gids)):
                key = (gids[i], gids[j])
                self._pairs[key] = float(sims[i, j])
                self._pairs.move_to_end(key)
        while len(self._pairs) > self.capacity:
            self._pairs.popitem(last=False)

    def quantile(self, q: float) -> float:
        return float(np.quantile(np.fromiter(self._pairs.values(), np.float64), q))


@dataclass(slots=True, frozen=True)
class LinkDecision:
    candidate: int | None
    """The earlier identity to link to; None: a new person."""
    score: float
    threshold: float


def decide(
    query: np.ndarray,
    candidates: dict[int, np.ndarray],
    negatives: DifferentPeopleSimilarities,
    cfg: ReentryConfig,
    near: set[int] | None = None,
) -> LinkDecision | None:
    """Link decision for a tentative identity's mean appearance; None while it cannot be decided yet
    (no candidate, or the scene has not shown enough different-person pairs to calibrate). ``near``: the
    candidates within near re-appearance reach (see `ReentryConfig.near_speed_mps`)."""
    if not candidates or len(negatives) < cfg.min_negatives:
        return None
    if near is not None and len(near) == 1:
        (gid,) = near
        sim = float(query @ candidates[gid])
        typical = negatives.quantile(0.5)
        if sim >= typical:
            return LinkDecision(gid, sim, typical)
    threshold = max(cfg.floor, negatives.quantile(cfg.quantile))
    ranked = sorted(((float(query @ v), gid) for gid, v in candidates.items()), reverse=True)
    best, gid = ranked[0]
    second = ranked[1][0] if len(ranked) > 1 else -1.0
    if best >= threshold and best - second >= cfg.margin:
        return LinkDecision(gid, best, threshold)
    return LinkDecision(None, best, threshold)
