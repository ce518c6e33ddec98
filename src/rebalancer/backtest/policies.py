"""Rebalancing policies compared by the backtest: *when* to trade, and with which optimizer policy.

Every policy trades through the same optimizer (:class:`rebalancer.optimizer.Recommender`); they
differ in their trigger and in how hard they pull to target:

``never``
    Never rebalances (withdrawals still sell, see the engine). The do-nothing shadow.
``monthly`` / ``quarterly``
    Calendar: on the first trading day of each month / quarter (periods from
    :func:`rebalancer.domain.calendar.period_bounds`), trade to target.
``band-abs-<pct>``
    Absolute tolerance band: when some instrument (or cash) is ``pct`` % of NAV or more away
    from its target (:func:`rebalancer.domain.triggers.evaluate_bands`), trade to target.
``band-rel-<pct>``
    Relative band: when some ``|w - w*| / w*`` reaches ``pct`` %, trade to target.
``optimizer``
    On every decision date (weekly by default), ask the optimizer with the live service's
    :func:`~rebalancer.service_layer.handlers.recommending.default_policy`; it trades only when
    its net benefit exceeds ``min_net_benefit`` (the net-benefit rule).
``optimizer@<gamma>``
    The same with ``risk_aversion = gamma`` (a calibration what-if).

"Trade to target" is the optimizer with :data:`FORCED_RISK_AVERSION` and no net-benefit
threshold: drift dominates every cost, so it goes (nearly) all the way to target while still
choosing the cheapest lots, rounding to whole shares and refusing wash sales.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray

from rebalancer.domain.calendar import Frequency, period_bounds
from rebalancer.domain.drift import account_drift
from rebalancer.domain.model import Instrument
from rebalancer.domain.triggers import Band, evaluate_bands
from rebalancer.optimizer.schemas import Policy
from rebalancer.service_layer.handlers.recommending import default_policy

FORCED_RISK_AVERSION = 1e5
"""Risk aversion of "trade to target": a 1 % drift then costs far more than any trade."""

DEFAULT_POLICIES = ("never", "monthly", "quarterly", "band-abs-5", "band-rel-25", "optimizer")
"""Policies of the default run."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """A decision to ask the optimizer: why, with which policy, and whether to grade it."""

    reason: str
    policy: Policy
    grade: bool


@dataclass(frozen=True, slots=True)
class DayState:
    """What a policy sees at the close of one trading day (weights are fractions of NAV)."""

    day: date
    previous_day: date | None
    decision_day: bool
    weights: Mapping[str, float]
    """Empty unless the policy :attr:`~RebalancePolicy.needs_weights`."""
    targets: Mapping[str, float]
    instruments: Mapping[str, Instrument]


def forced_policy() -> Policy:
    """The optimizer policy of "trade to target" (baselines)."""
    return default_policy().model_copy(
        update={"risk_aversion": FORCED_RISK_AVERSION, "min_net_benefit": 0.0}
    )


@dataclass(frozen=True)
class RebalancePolicy:
    """A named trigger rule.

    Attributes
    ----------
    name
        The spec it was parsed from (e.g. ``"band-abs-5"``).
    kind
        ``never``, ``calendar``, ``band`` or ``optimizer``.
    frequency
        Calendar period (``calendar`` only).
    band
        Domain drift band (``band`` only).
    optimizer_policy
        What the optimizer is asked with when the trigger fires.
    """

    name: str
    kind: str
    optimizer_policy: Policy
    frequency: Frequency | None = None
    band: Band | None = None

    @property
    def band_width(self) -> float | None:
        """Width of an absolute band (fraction of NAV), else None."""
        return self.band.absolute if self.band is not None else None

    @property
    def needs_weights(self) -> bool:
        """Whether :meth:`decide` reads ``DayState.weights`` (band policies only; the others
        get an empty mapping)."""
        return self.kind == "band"

    def may_fire(self, active: NDArray[np.float64], target: NDArray[np.float64]) -> bool:
        """A cheap, conservative pre-check of a band: False only when no key can be at or
        beyond the band, so :meth:`decide` (the domain's ``evaluate_bands``) need not run.

        ``active`` is ``w - w*`` and ``target`` is ``w*`` (fractions of NAV) per instrument
        with cash as one more entry, in any order. Always True for other kinds.
        """
        if self.band is None:
            return True
        b, tol = self.band, 1e-9
        if b.absolute is not None and float(np.abs(active).max(initial=0.0)) >= b.absolute - tol:
            return True
        if b.relative is not None:
            on = (target > 0) & (target >= b.min_target)
            if on.any() and float((np.abs(active[on]) / target[on]).max()) >= b.relative - tol:
                return True
        return False

    def decide(self, s: DayState) -> Trigger | None:
        """The trigger of day ``s.day``, or None."""
        if self.kind == "never":
            return None
        if self.kind == "optimizer":
            if not s.decision_day:
                return None
            return Trigger("decision date", self.optimizer_policy, True)
        if self.kind == "calendar":
            assert self.frequency is not None
            if s.previous_day is None:
                return None
            if period_bounds(self.frequency, s.day) == period_bounds(
                self.frequency, s.previous_day
            ):
                return None
            return Trigger(f"{self.frequency} calendar", self.optimizer_policy, False)
        assert self.band is not None
        keys = {k for k in (*s.weights, *s.targets) if k in s.instruments}
        report = account_drift(
            "backtest", s.weights, s.targets, {k: s.instruments[k] for k in keys}
        )
        (ev,) = evaluate_bands(report, [self.band])
        return Trigger(ev.reason, self.optimizer_policy, False) if ev.fired else None


def parse_policy(spec: str) -> RebalancePolicy:
    """A policy from its spec (see the module docstring).

    Raises
    ------
    ValueError
        For an unknown spec, naming the accepted forms.
    """
    s = spec.strip().lower()
    if s == "never":
        return RebalancePolicy(s, "never", forced_policy())
    if s in ("monthly", "quarterly"):
        return RebalancePolicy(s, "calendar", forced_policy(), frequency=Frequency(s))
    if s.startswith("band-abs-") or s.startswith("band-rel-"):
        try:
            pct = float(s.split("-", 2)[2])
        except ValueError:
            pct = -1.0
        if not 0 < pct < 100:
            raise ValueError(f"{spec}: the band width must be a percentage in (0, 100)")
        band = (
            Band("instrument", absolute=pct / 100)
            if s.startswith("band-abs-")
            else Band("instrument", relative=pct / 100)
        )
        return RebalancePolicy(s, "band", forced_policy(), band=band)
    if s == "optimizer":
        return RebalancePolicy(s, "optimizer", default_policy())
    if s.startswith("optimizer@"):
        try:
            gamma = float(s.split("@", 1)[1])
        except ValueError:
            gamma = -1.0
        if gamma < 0:
            raise ValueError(f"{spec}: optimizer@<risk aversion>, e.g. optimizer@1000")
        return RebalancePolicy(
            s, "optimizer", default_policy().model_copy(update={"risk_aversion": gamma})
        )
    raise ValueError(
        f"unknown policy {spec!r}: use never, monthly, quarterly, band-abs-<pct>, "
        "band-rel-<pct>, optimizer or optimizer@<risk aversion>"
    )
