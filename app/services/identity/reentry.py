"""Re-entry: a person who left every view and comes back gets their old global id, when the evidence says so.

A new identity starts *tentative*: for ``window_s`` after it appears it may still turn out to be someone seen
before. Every frame, each tentative identity is weighed against every identity that was already gone when it
appeared (nobody is in two places at once) with two independent pieces of evidence, each a log-likelihood ratio
"the same person" vs "someone else":

* **Where and when** (`MotionEvidence`): where the gone person would be now had they walked on at their exit
  velocity, with an uncertainty that grows with the time out of sight (turns, stops), against the chance that
  anyone else appears at that spot — one over the ground the cameras see. Short gaps along a straight walk are
  decisive; after long gaps position says little and the ratio falls below zero.
* **Looks** (`AppearanceEvidence`): the similarity of the two identities' appearance means, scored against two
  distributions learnt from the running task itself, without labels — *different* people: identities seen at
  the same moment in different places; *the same* person: one identity's means from two different cameras (the
  view change a re-entry brings). Until both have enough pairs appearance counts for nothing; its ratio is
  clipped so that a weak descriptor can never decide alone.

The pairs are assigned one-to-one, best first. A tentative identity is linked when its total log-odds reaches
``link_log_odds`` and leads both its own runner-up and the gone identity's other suitors by ``margin``;
otherwise it stays, explicitly, a new person (at ``window_s`` the question is closed). A link is reported as an
identity ``merged`` event with its log-odds as score (the first frames went out under the tentative id; history
analytics count the person once).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from app.models.base import FloatArray
from app.services.identity.geometry import XY, GeometryGate

BIRTH_PRIOR = 5.0

LOOKS_PRIORS: dict[str, tuple[float, float, float]] = {"fused": (0.557, -0.097, 0.294)}
"""Per embedder (camera-centred), what a scene's calibration pairs end up showing: the same person's mean cosine,
different people's, and their pooled spread. ``fused``: the mean of the end-of-task fits on the four dev-derived
sets (multiview-dev, narrow-dev, n4-dev, n6-dev); the four val-derived sets give 0.561 / −0.086 / 0.292
(docs/accuracy.md). A task starts from it instead of from nothing, so looks count from its first seconds."""


@dataclass(slots=True, frozen=True)
class ReentryConfig:
    """Defaults and the evidence behind them: docs/accuracy.md ("Identity over time")."""

    window_s: float = 6.0
    """How long after appearing a new identity may still be linked to an earlier one."""
    max_gap_s: float = 60.0
    """Longest time out of every view that a link may bridge."""
    link_log_odds: float = 2.0
    """Total evidence (natural-log likelihood ratio) a link needs: about 7 : 1 for "the same person" (with levelled
    crops looks separate people better, so less is needed; docs/accuracy.md)."""
    margin: float = 1.0
    """Lead in log-odds over the runner-up on either side (no choice between near-equals)."""
    closing_log_odds: float = 1.0
    """A newcomer whose window is closing, with all the looks it gathered, is linked on this much evidence when it
    leads every other option of both sides by ``closing_margin``: a returner who turned back out of sight, or came
    back long after, scores little by position, yet may be the only one it could be (docs/accuracy.md, stop 31).
    At or above ``link_log_odds``: off (`last_chance`)."""
    closing_margin: float = 3.0
    """Lead over every other option of both sides that such a last-chance link needs (``margin`` for the usual)."""
    position_sigma_m: float = 0.7
    """Spread of a foot point right after the gap: box noise and the exit velocity's error."""
    walk_noise_m2ps3: float = 0.042
    """How far people stray from walking on at their exit velocity: variance added per cubed second out of sight
    (a walker's velocity wanders — turns, slows — so the error grows as the gap to the power 1.5, the
    constant-velocity model's white-noise acceleration). Fitted to the root-mean-square error of that prediction on
    ground-truth trajectories, which it matches from 2 s to 15 s gaps (docs/accuracy.md)."""
    max_walk_mps: float = 2.0
    """Exit speeds are clipped to this before extrapolating (a run is not extrapolated for 10 s)."""
    scene_area_m2: float = 300.0
    """Ground where someone else could appear (the product derives it from the cameras' footprints)."""
    birth_radius_m: float = 2.0
    """Neighbourhood over which the density of where people appear is counted (0: uniform background)."""
    min_samples: int = 3
    """Appearance samples an identity's mean needs before it is compared: a gone person's (what a newcomer meets)
    and each mean in the scene's calibration pairs."""
    newcomer_min_samples: int = 1
    """Samples a newcomer needs before its looks count. One: its first crop meets the gone person's mean, so a
    returner is linked in the frame they appear; waiting for three showed the newcomer's own id meanwhile (an id
    flashed for two frames, counted as one more person; replays: docs/accuracy.md)."""
    min_pairs: int = 8
    """Pairs each calibration distribution needs before appearance counts."""
    max_pairs: int = 2000
    appearance_clip: float = 3.0
    """Most log-odds appearance may add or remove."""
    looks_prior: tuple[float, float, float] | None = None
    """Same-person mean, different-people mean and pooled spread of the looks' cosine to start from
    (`LOOKS_PRIORS`); None: looks count for nothing until each side has ``min_pairs`` pairs of the scene's own."""
    looks_prior_pairs: int = 24
    """Pairs the prior weighs as, on each side, against the scene's own (which outweigh it after a few dozen)."""

    def __post_init__(self) -> None:
        samples = min(self.min_samples, self.newcomer_min_samples)
        if self.window_s <= 0 or self.max_gap_s <= 0 or samples < 1 or self.min_pairs < 2:
            raise ValueError("reentry window, gap, samples and pair counts must be positive")
        if self.closing_margin < 0:
            raise ValueError("reentry closing margin must be >= 0")
        if self.position_sigma_m <= 0 or self.walk_noise_m2ps3 < 0 or self.scene_area_m2 <= 0 or self.margin < 0:
            raise ValueError("reentry sigma and scene area must be > 0, walk noise and margin >= 0")
        if self.looks_prior is not None and (
            self.looks_prior_pairs < 1 or self.looks_prior[2] <= 0 or self.looks_prior[0] <= self.looks_prior[1]
        ):
            raise ValueError("a looks prior needs pairs >= 1, a spread > 0 and the same-person mean above the other")

    @property
    def last_chance(self) -> bool:
        """Whether a newcomer whose window closes is weighed once more, on the lower ``closing_log_odds`` bar."""
        return self.closing_log_odds < self.link_log_odds


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


class PairSimilarities:
    """Similarities of labelled pairs (one value per pair key, its latest), the newest ``capacity`` kept."""

    def __init__(self, capacity: int = 2000) -> None:
        self.capacity = capacity
        self._pairs: OrderedDict[tuple[object, ...], float] = OrderedDict()
        self.version = 0
        """Bumped by every change (a pair's value updates in place, so the size alone does not tell)."""

    def __len__(self) -> int:
        return len(self._pairs)

    def put(self, key: tuple[object, ...], sim: float) -> None:
        self.version += 1
        self._pairs[key] = sim
        self._pairs.move_to_end(key)
        while len(self._pairs) > self.capacity:
            self._pairs.popitem(last=False)

    def values(self) -> np.ndarray:
        return np.fromiter(self._pairs.values(), np.float64, len(self._pairs))


class DifferentPeopleSimilarities(PairSimilarities):
    """Identities seen at the same time in different places are certainly two people."""

    def observe(self, means: dict[int, np.ndarray]) -> None:
        """``means``: unit appearance means of identities seen now, each in its own place."""
        gids = sorted(means)
        if len(gids) < 2:
            return
        m = np.stack([means[g] for g in gids])
        sims = m @ m.T
        for i in range(len(gids)):
            for j in range(i + 1, len(gids)):
                self.put((gids[i], gids[j]), float(sims[i, j]))


class AppearanceEvidence:
    """Log-likelihood ratio of a similarity under "same person" vs "different people", both learnt online.

    Each side is a normal fit of its pairs with a pooled spread (a linear ratio: monotone in the similarity, no
    artefacts in the tails), clipped to ``± clip``. Without a prior: zero until both sides have ``min_pairs``
    pairs. With one (``looks_prior``), its means and spread count as ``looks_prior_pairs`` pairs on each side,
    pooled with the scene's own, so looks speak from the start and the scene takes over as its pairs come. Zero
    whenever the result shows no separation (same-person pairs no more alike than different ones)."""

    def __init__(self, cfg: ReentryConfig) -> None:
        self.cfg = cfg
        self.same = PairSimilarities(cfg.max_pairs)
        self.different = DifferentPeopleSimilarities(cfg.max_pairs)
        self._fit: tuple[float, float, float] | None = None
        self._fit_at = (-1, -1)
        """Versions of both pair sets the fit was made from: refit only after a change, and after every one."""

    @property
    def calibrated(self) -> bool:
        own = len(self.same) >= self.cfg.min_pairs and len(self.different) >= self.cfg.min_pairs
        return own or self.cfg.looks_prior is not None

    def _params(self) -> tuple[float, float, float] | None:
        versions = (self.same.version, self.different.version)
        if versions != self._fit_at:
            self._fit_at = versions
            self._fit = None
            if self.cfg.looks_prior is not None:
                self._fit = self._with_prior(self.cfg.looks_prior, self.cfg.looks_prior_pairs)
            elif self.calibrated:
                s, d = self.same.values(), self.different.values()
                var = (s.var() * (len(s) - 1) + d.var() * (len(d) - 1)) / max(1, len(s) + len(d) - 2)
                if s.mean() > d.mean() and var > 0:
                    self._fit = (float(s.mean()), float(d.mean()), float(max(var, 1e-4)))
        return self._fit

    def _with_prior(self, prior: tuple[float, float, float], k: int) -> tuple[float, float, float] | None:
        """Means and pooled variance of the scene's pairs plus ``k`` pseudo-pairs per side drawn from the prior."""
        mu_s0, mu_d0, sd0 = prior
        s, d = self.same.values(), self.different.values()
        mu_s = (k * mu_s0 + float(s.sum())) / (k + len(s))
        mu_d = (k * mu_d0 + float(d.sum())) / (k + len(d))
        scatter = k * (2 * sd0 * sd0 + (mu_s0 - mu_s) ** 2 + (mu_d0 - mu_d) ** 2)
        scatter += float(((s - mu_s) ** 2).sum() + ((d - mu_d) ** 2).sum())
        var = scatter / (2 * k + len(s) + len(d))
        return (mu_s, mu_d, max(var, 1e-4)) if mu_s > mu_d else None

    def log_odds(self, sim: float) -> float:
        p = self._params()
        if p is None:
            return 0.0
        mu_s, mu_d, var = p
        llr = (mu_s - mu_d) / var * (sim - 0.5 * (mu_s + mu_d))
        return float(np.clip(llr, -self.cfg.appearance_clip, self.cfg.appearance_clip))


@dataclass(slots=True, frozen=True)
class Exit:
    """Where and how a person left: last map position, its time, and walking velocity then (m/s)."""

    xy: XY
    t: float
    velocity: XY | None


class MotionEvidence:
    """Log-likelihood ratio of a re-appearance at ``xy`` after ``gap`` s under "the person who left" (walked on at
    their exit velocity, 2-D normal spread ``√(sigma² + walk_noise × gap³)``) vs "anyone else": the density of where new
    identities have appeared in this task so far (`births`: people enter where paths cross the edges of the views,
    so a spot where many appear is weak evidence), never below uniform over the seen ground. None when even the
    fastest walk could not have got there (the registry's `GeometryGate.reach_m`)."""

    def __init__(self, cfg: ReentryConfig, gate: GeometryGate) -> None:
        self.cfg = cfg
        self.gate = gate
        self.births: deque[XY] = deque(maxlen=cfg.max_pairs)

    def born(self, xy: XY) -> None:
        """A new identity first appeared at ``xy``."""
        self.births.append(xy)

    def background(self, xy: XY, exclude: int = 1) -> float:
        """Chance density (1/m²) of someone appearing at ``xy`` (``exclude``: the newcomer's own birth)."""
        uniform = 1.0 / self.cfg.scene_area_m2
        r = self.cfg.birth_radius_m
        if r <= 0 or not self.births:
            return uniform
        disc = math.pi * r * r
        near = max(0, sum(1 for b in self.births if (b[0] - xy[0]) ** 2 + (b[1] - xy[1]) ** 2 <= r * r) - exclude)
        n = max(0, len(self.births) - exclude)
        prior = BIRTH_PRIOR  # pseudo-births spread uniformly: few births say little
        return max(uniform, (near + prior * disc * uniform) / ((n + prior) * disc))

    def log_odds(self, exit_: Exit, xy: XY, t: float, background: float | None = None) -> float | None:
        """``background``: `background(xy)` when the caller already has it (one newcomer, many leavers)."""
        cfg = self.cfg
        gap = t - exit_.t
        if gap < 0 or gap > cfg.max_gap_s:
            return None
        if math.dist(exit_.xy, xy) > self.gate.reach_m(gap):
            return None
        miss = math.dist(_walk(exit_.xy, exit_.velocity, gap, cfg.max_walk_mps), xy)
        unknown = 0.0 if exit_.velocity is not None else cfg.max_walk_mps * 0.5 * gap  # no direction: a wider disc
        sigma = math.sqrt(cfg.position_sigma_m**2 + cfg.walk_noise_m2ps3 * gap**3) + unknown
        log_density = -math.log(2 * math.pi * sigma * sigma) - miss * miss / (2 * sigma * sigma)
        return log_density - math.log(self.background(xy) if background is None else background)


def _walk(xy: XY, velocity: XY | None, dt: float, max_mps: float) -> XY:
    vx, vy = velocity or (0.0, 0.0)
    speed = math.hypot(vx, vy)
    if speed > max_mps:
        vx, vy = vx * max_mps / speed, vy * max_mps / speed
    return (xy[0] + vx * dt, xy[1] + vy * dt)


def walking_velocity(track: deque[tuple[float, float, float]], min_span_s: float = 0.5) -> XY | None:
    """Least-squares velocity (m/s) over recent ``(t, x, y)`` positions; None over less than ``min_span_s``."""
    if len(track) < 3 or track[-1][0] - track[0][0] < min_span_s:
        return None
    a = np.asarray(track, np.float64)
    t = a[:, 0] - a[:, 0].mean()
    denom = float(t @ t)
    if denom <= 0:
        return None
    return (float(t @ (a[:, 1] - a[:, 1].mean()) / denom), float(t @ (a[:, 2] - a[:, 2].mean()) / denom))


@dataclass(slots=True, frozen=True)
class LinkDecision:
    tentative: int
    candidate: int
    """The earlier identity to link to."""
    score: float
    """Total log-odds of the link."""


def assign_links(
    scores: dict[tuple[int, int], float], cfg: ReentryConfig, closing: frozenset[int] = frozenset()
) -> list[LinkDecision]:
    """One-to-one links from ``(tentative, gone) → log-odds``, best first: a pair is linked when it reaches
    ``link_log_odds`` and leads every other option of both its members by ``margin`` — or, for a newcomer in
    ``closing`` (its last chance), when it reaches ``closing_log_odds`` and leads by ``closing_margin``."""
    rows: dict[int, list[float]] = {}
    cols: dict[int, list[float]] = {}
    for (n, g), s in scores.items():
        rows.setdefault(n, []).append(s)
        cols.setdefault(g, []).append(s)
    out: list[LinkDecision] = []
    used_n: set[int] = set()
    used_g: set[int] = set()
    for (n, g), s in sorted(scores.items(), key=lambda kv: -kv[1]):
        if n in used_n or g in used_g:
            continue
        rival = max(sorted(rows[n])[-2:-1] + sorted(cols[g])[-2:-1], default=-math.inf)
        usual = s >= cfg.link_log_odds and s - rival >= cfg.margin
        last_chance = n in closing and s >= cfg.closing_log_odds and s - rival >= cfg.closing_margin
        if not (usual or last_chance):
            continue
        out.append(LinkDecision(n, g, s))
        used_n.add(n)
        used_g.add(g)
    return out
