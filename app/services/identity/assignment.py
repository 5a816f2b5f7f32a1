"""One-to-one assignment (Hungarian) on a score matrix where forbidden pairs are ``-inf``."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

_FORBIDDEN_COST = 1e9


def assign_max(score: npt.NDArray[np.float64]) -> list[tuple[int, int]]:
    """Row/column pairs maximising the total score, each row and column used at most once; pairs scored
    ``-inf`` (or NaN) are never returned, even when the solver had to place them."""
    score = np.asarray(score, np.float64)
    if score.ndim != 2:
        raise ValueError(f"score must be a 2-D matrix, got shape {score.shape}")
    allowed = np.isfinite(score)
    if not allowed.any():
        return []
    finite = score[allowed]
    # Costs must be finite for the solver; forbidden pairs cost more than any allowed assignment can save.
    cost = np.where(allowed, finite.max() - score, _FORBIDDEN_COST + (finite.max() - finite.min()) * score.size)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]
