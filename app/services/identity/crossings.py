"""People who cross can come out under each other's identity; their looks tell, and the identities go back.

When two people pass close by each other, every camera may lose them behind one another at once (on our data
all views see the same occlusion) and the trackers may continue each on the other. Position cannot undo that —
both stand where either could be — but appearance can: after the crossing, what each identity now follows looks
like what the *other* one looked like before. So each identity keeps its last ``recent`` looks apart from the
settled rest, and for two identities that came within ``near_m`` of each other in the last ``window_s``:

    gain = [LLR(recent A ~ settled B) + LLR(recent B ~ settled A)]
         − [LLR(recent A ~ settled A) + LLR(recent B ~ settled B)]

with the scene's learnt appearance log-likelihood ratio (`AppearanceEvidence`, clipped, zero until calibrated). A
swap is undone when the gain reaches ``log_odds`` — both sides must speak for it, so one ambiguous person cannot
trigger it. Pairs are taken one-to-one, best first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(slots=True, frozen=True)
class SwapConfig:
    """Defaults and the evidence behind them: docs/accuracy.md ("People who cross")."""

    log_odds: float = 6.0
    """Evidence for "swapped" over "as they are", summed over both identities."""
    recent: int = 6
    """Looks since the crossing that are weighed (at the pipeline's cadence about 2–4 s of a person)."""
    near_m: float = 2.0
    """Two people this close on the map may have been swapped."""
    window_s: float = 10.0
    """How long after coming close a swap is still looked for."""

    def __post_init__(self) -> None:
        if self.recent < 2 or self.near_m <= 0 or self.window_s <= 0:
            raise ValueError("swap check: recent >= 2, near_m and window_s > 0")


@dataclass(slots=True, frozen=True)
class Looks:
    """An identity's recent looks and the settled rest, as unit means."""

    recent: np.ndarray
    settled: np.ndarray


def swap_gain(a: Looks, b: Looks, log_odds: Callable[[float], float]) -> float:
    """Evidence (log-odds) that identities ``a`` and ``b`` now follow each other's person."""
    crossed = log_odds(float(a.recent @ b.settled)) + log_odds(float(b.recent @ a.settled))
    kept = log_odds(float(a.recent @ a.settled)) + log_odds(float(b.recent @ b.settled))
    return crossed - kept


def pick_swaps(gains: dict[tuple[int, int], float], threshold: float) -> list[tuple[int, int]]:
    """Pairs to swap back: gain ≥ ``threshold``, one-to-one, best first."""
    used: set[int] = set()
    out: list[tuple[int, int]] = []
    for (a, b), g in sorted(gains.items(), key=lambda kv: -kv[1]):
        if g >= threshold and a not in used and b not in used:
            out.append((a, b))
            used.update((a, b))
    return out
