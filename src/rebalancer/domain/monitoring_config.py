"""Per-model monitoring configuration: the ``models.bands`` JSON and the ``models.trigger_rule``.

Both are validated when a model is saved (errors name the bad part, e.g.
``bands.schedules[0].frequency`` or ``trigger_rule.rule.all[1].op``) and parsed again, leniently,
when an account is evaluated. The full schema is documented in ``docs/monitoring.md``; in short
every key of ``models.bands`` is optional::

    {
      "instrument":  0.03 | {"absolute": 0.03, "relative": 0.25, "min_target": 0.02,
                             "priority": 60} | null,
      "sector":      ... same form ...,
      "asset_class": ... same form ...,
      "sleeve":      ... same form ...,
      "account":     0.04 | {"turnover": 0.04, "sum_abs": 0.1, "max_abs": 0.05,
                             "tracking_error": 0.02, "priority": 60} | null,
      "keys": [{"level": "sector", "key": "technology", "absolute": 0.02, "relative": 0.2}],
      "alerts": {"critical_multiple": 2.0, "hysteresis": 0.2},
      "schedules": [{"id": "month-end", "frequency": "monthly", "at": "10:00",
                     "anchor": "last", "priority": 20, "calendar": {...}}],
      "signals": {"volatility_regime": {...} | false, "correlation_change": {...} | false,
                  "market_condition": {...} | null, "risk_budget": {...} | null},
      "policy": {"cooldown_hours": 0, "suppress_market_closed": ["calendar"],
                 "suppress_open_orders": true, "calendar": {...}}
    }

A bare number for a level is its absolute band; ``null`` switches a default band off. Levels
not named keep :data:`DEFAULT_LEVEL_BANDS`. Units: bands are fractions of NAV (absolute), of the
target weight (relative) or risk-model units (``tracking_error``, annualised volatility).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from typing import Any

from rebalancer.domain.calendar import BusinessCalendar, Frequency, Schedule
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.rules import RuleDefinition, parse_definition
from rebalancer.domain.triggers import DEFAULT_PRIORITY, SUMMARY_METRICS, Band, TriggerKind

BAND_LEVELS = ("instrument", "sector", "asset_class", "sleeve")
"""Levels with one drift per key; ``account`` is the level of summary metrics."""

DEFAULT_LEVEL_BANDS: Mapping[str, Any] = {
    "instrument": {"absolute": 0.03, "relative": 0.25, "min_target": 0.02},
    "asset_class": {"absolute": 0.05},
    "account": {"turnover": 0.04},
}
"""Bands of a model whose ``bands`` JSON does not name the level."""

SOURCES = ("market_data", "calendar", "position")
"""What started an evaluation: a price tick, the scheduler, or a position change."""

KNOWN_SIGNALS: frozenset[str] = frozenset(
    {
        "drift.sum_abs",
        "drift.turnover",
        "drift.max_abs",
        "drift.tracking_error",
        *(f"drift.{lvl}.{m}" for lvl in ("sector", "asset_class") for m in ("sum_abs", "max_abs")),
        "vol.short",
        "vol.long",
        "vol.ratio",
        "corr.distance",
        "market.drawdown",
        "market.vol_index",
        "risk.vol",
        "risk.tracking_error",
    }
)
"""Signals a trigger rule may read (see ``docs/monitoring.md`` for units)."""


def _bad(path: str, detail: str) -> InvalidInput:
    return InvalidInput(f"{path}: {detail}", [path])


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(path, f"must be an object, got {type(value).__name__}")
    return value


def _keys(obj: Mapping[str, Any], allowed: Collection[str], path: str) -> None:
    extra = sorted(set(obj) - set(allowed))
    if extra:
        raise _bad(f"{path}.{extra[0]}", f"unknown key; expected one of {sorted(allowed)}")


def _num(value: Any, path: str, *, lo: float = 0.0, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(path, f"must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise _bad(path, f"must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def _int(value: Any, path: str, *, lo: int = 0, hi: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _bad(path, f"must be an integer between {lo} and {hi}, got {value!r}")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(path, "must be a non-empty string")
    return value


def _time(value: Any, path: str) -> time:
    if not isinstance(value, str):
        raise _bad(path, "must be a local time 'HH:MM'")
    try:
        return time.fromisoformat(value)
    except ValueError as exc:
        raise _bad(path, f"must be a local time 'HH:MM', got {value!r}") from exc


def _date(value: Any, path: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise _bad(path, f"must be an ISO date 'YYYY-MM-DD', got {value!r}") from exc


# --------------------------------------------------------------------------- typed config
@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Alert severities: warning at the band, critical at ``critical_multiple`` x band; cleared
    only below ``band * (1 - hysteresis)`` (see
    :class:`~rebalancer.domain.triggers.AlertPolicy`)."""

    critical_multiple: float = 2.0
    hysteresis: float = 0.2


@dataclass(frozen=True, slots=True)
class VolatilityRegimeSettings:
    """Short vs long realized volatility of the account's current holdings' value path."""

    short_window: int = 20
    long_window: int = 250
    ratio_threshold: float = 1.5


@dataclass(frozen=True, slots=True)
class CorrelationSettings:
    """Rolling correlation of the model's instruments vs a reference.

    ``reference`` is ``None`` for the correlation over the whole stored history, else
    ``(instruments, matrix)`` given in the model's config.
    """

    window: int = 60
    threshold: float = 0.2
    reference: tuple[tuple[str, ...], tuple[tuple[float, ...], ...]] | None = None


@dataclass(frozen=True, slots=True)
class MarketConditionSettings:
    """Drawdown of an index (an instrument with stored prices) and/or a volatility index level
    (the latest stored close of another instrument, e.g. ``VIX``)."""

    index: str | None = None
    drawdown_threshold: float = 0.10
    vol_index: str | None = None
    vol_index_threshold: float | None = None


@dataclass(frozen=True, slots=True)
class RiskBudgetSettings:
    """Ex-ante volatility / tracking-error budgets and the sleeve risk-contribution tolerance."""

    vol_budget: float | None = None
    te_budget: float | None = None
    contribution_tolerance: float | None = None


@dataclass(frozen=True, slots=True)
class SignalSettings:
    """Which market-signal triggers run (``None`` = off) and their parameters."""

    volatility_regime: VolatilityRegimeSettings | None = field(
        default_factory=VolatilityRegimeSettings
    )
    correlation_change: CorrelationSettings | None = field(default_factory=CorrelationSettings)
    market_condition: MarketConditionSettings | None = None
    risk_budget: RiskBudgetSettings | None = None


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Cooldown and suppression of rebalance requests.

    Attributes
    ----------
    cooldown
        Minimum time between the start of two rebalances of one account (wall clock of the
        database); manual requests skip it.
    suppress_market_closed
        Sources (``market_data``, ``calendar``, ``position``) whose requests are held back while
        ``calendar`` says the market is closed. Default: only the calendar scheduler, because the
        demo and back-tests replay historical closing prices at any hour.
    suppress_open_orders
        Hold back requests while orders of the account are still working.
    calendar
        The exchange calendar (timezone, holidays, session) for market hours and schedules.
    """

    cooldown: timedelta = timedelta(0)
    suppress_market_closed: frozenset[str] = frozenset({"calendar"})
    suppress_open_orders: bool = True
    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """Everything that drives monitoring of accounts following one model (or several)."""

    bands: tuple[Band, ...]
    alerts: AlertSettings = field(default_factory=AlertSettings)
    schedules: tuple[tuple[Schedule, int], ...] = ()
    """``(schedule, priority)`` pairs."""
    signals: SignalSettings = field(default_factory=SignalSettings)
    policy: GatePolicy = field(default_factory=GatePolicy)


# --------------------------------------------------------------------------- parsing
_THRESHOLD_PRIORITY = DEFAULT_PRIORITY[TriggerKind.THRESHOLD]


def _level_bands(level: str, value: Any, path: str) -> list[Band]:
    if value is None or value is False:
        return []
    if level == "account":
        if not isinstance(value, Mapping):
            return [Band("account", absolute=_num(value, path), metric="turnover")]
        _keys(value, {*SUMMARY_METRICS, "priority"}, path)
        prio = _int(value.get("priority", _THRESHOLD_PRIORITY), f"{path}.priority", hi=1000)
        return [
            Band("account", absolute=_num(value[m], f"{path}.{m}"), metric=m, priority=prio)
            for m in SUMMARY_METRICS
            if value.get(m) is not None
        ]
    if not isinstance(value, Mapping):
        return [Band(level, absolute=_num(value, path, hi=1.0))]
    return [_band_obj(level, value, path, None)]


def _band_obj(level: str, obj: Mapping[str, Any], path: str, key: str | None) -> Band:
    allowed = {"absolute", "relative", "min_target", "priority"}
    _keys(obj, allowed | ({"level", "key"} if key is not None else set()), path)
    absolute = obj.get("absolute")
    relative = obj.get("relative")
    if absolute is None and relative is None:
        raise _bad(path, "needs 'absolute' and/or 'relative'")
    return Band(
        level,
        absolute=None if absolute is None else _num(absolute, f"{path}.absolute", hi=1.0),
        relative=None if relative is None else _num(relative, f"{path}.relative"),
        key=key,
        priority=_int(obj.get("priority", _THRESHOLD_PRIORITY), f"{path}.priority", hi=1000),
        min_target=_num(obj.get("min_target", 0.0), f"{path}.min_target", hi=1.0),
    )


def parse_calendar(obj: Any, path: str) -> BusinessCalendar:
    """``{"tz", "holidays": [dates], "open": "HH:MM", "close": "HH:MM", "early_closes":
    {date: "HH:MM"}}``, every key optional (New York, 09:30-16:00, no holidays)."""
    o = _obj(obj, path)
    _keys(o, {"tz", "holidays", "open", "close", "early_closes"}, path)
    holidays = o.get("holidays", [])
    if not isinstance(holidays, list):
        raise _bad(f"{path}.holidays", "must be a list of ISO dates")
    early = _obj(o.get("early_closes", {}), f"{path}.early_closes")
    kwargs: dict[str, Any] = {
        "holidays": frozenset(_date(h, f"{path}.holidays[{i}]") for i, h in enumerate(holidays)),
        "early_closes": {
            _date(d, f"{path}.early_closes.{d}"): _time(t, f"{path}.early_closes.{d}")
            for d, t in early.items()
        },
    }
    if "tz" in o:
        kwargs["tz"] = _str(o["tz"], f"{path}.tz")
    for k in ("open", "close"):
        if k in o:
            kwargs[k] = _time(o[k], f"{path}.{k}")
    try:
        return BusinessCalendar(**kwargs)
    except InvalidInput as exc:
        sub = exc.fields[0].split(".", 1)[-1] if exc.fields else ""
        raise _bad(f"{path}.{sub}" if sub else path, exc.detail) from exc


def _schedule(obj: Any, path: str, default_cal: BusinessCalendar) -> tuple[Schedule, int]:
    o = _obj(obj, path)
    _keys(o, {"id", "frequency", "at", "anchor", "priority", "calendar"}, path)
    sid = _str(o.get("id"), f"{path}.id")
    if "|" in sid:
        raise _bad(f"{path}.id", "must not contain '|'")
    try:
        freq = Frequency(str(o.get("frequency")))
    except ValueError as exc:
        raise _bad(f"{path}.frequency", f"must be one of {[f.value for f in Frequency]}") from exc
    anchor = o.get("anchor", "last")
    if isinstance(anchor, bool) or not isinstance(anchor, str | int):
        raise _bad(f"{path}.anchor", "must be 'first', 'last' or a day number")
    cal = parse_calendar(o["calendar"], f"{path}.calendar") if "calendar" in o else default_cal
    at = _time(o.get("at", "10:00"), f"{path}.at")
    try:
        sched = Schedule(sid, freq, at, anchor, cal)
    except InvalidInput as exc:
        raise _bad(f"{path}.anchor", exc.detail) from exc
    prio = _int(o.get("priority", DEFAULT_PRIORITY[TriggerKind.CALENDAR]), f"{path}.priority")
    return sched, prio


def _signals(obj: Any, path: str) -> SignalSettings:
    o = _obj(obj, path)
    _keys(o, {"volatility_regime", "correlation_change", "market_condition", "risk_budget"}, path)
    base = SignalSettings()

    def section(name: str) -> Mapping[str, Any] | None:
        if name not in o:
            return {} if getattr(base, name) is not None else None
        v = o[name]
        if v is None or v is False:
            return None
        if v is True:
            return {}
        return _obj(v, f"{path}.{name}")

    out: dict[str, Any] = {}
    if (s := section("volatility_regime")) is not None:
        p = f"{path}.volatility_regime"
        _keys(s, {"short_window", "long_window", "ratio_threshold"}, p)
        d = VolatilityRegimeSettings()
        short = _int(s.get("short_window", d.short_window), f"{p}.short_window", lo=2)
        long = _int(s.get("long_window", d.long_window), f"{p}.long_window", lo=2)
        if long < short:
            raise _bad(f"{p}.long_window", "must be >= short_window")
        ratio = _num(s.get("ratio_threshold", d.ratio_threshold), f"{p}.ratio_threshold")
        out["volatility_regime"] = VolatilityRegimeSettings(short, long, ratio)
    else:
        out["volatility_regime"] = None
    if (s := section("correlation_change")) is not None:
        p = f"{path}.correlation_change"
        _keys(s, {"window", "threshold", "reference"}, p)
        d2 = CorrelationSettings()
        ref = s.get("reference", "history")
        reference = None
        if ref != "history":
            r = _obj(ref, f"{p}.reference")
            _keys(r, {"instruments", "matrix"}, f"{p}.reference")
            insts = r.get("instruments")
            mat = r.get("matrix")
            if not isinstance(insts, list) or not all(isinstance(i, str) for i in insts):
                raise _bad(f"{p}.reference.instruments", "must be a list of instrument ids")
            n = len(insts)
            if not isinstance(mat, list) or len(mat) != n:
                raise _bad(f"{p}.reference.matrix", f"must be a {n} x {n} list of lists")
            rows = []
            for i, row in enumerate(mat):
                if not isinstance(row, list) or len(row) != n:
                    raise _bad(f"{p}.reference.matrix[{i}]", f"must have {n} numbers")
                rows.append(
                    tuple(
                        _num(v, f"{p}.reference.matrix[{i}][{j}]", lo=-1.0, hi=1.0)
                        for j, v in enumerate(row)
                    )
                )
            reference = (tuple(insts), tuple(rows))
        out["correlation_change"] = CorrelationSettings(
            _int(s.get("window", d2.window), f"{p}.window", lo=3),
            _num(s.get("threshold", d2.threshold), f"{p}.threshold", hi=2.0),
            reference,
        )
    else:
        out["correlation_change"] = None
    if (s := section("market_condition")) is not None:
        p = f"{path}.market_condition"
        _keys(s, {"index", "drawdown_threshold", "vol_index", "vol_index_threshold"}, p)
        if s.get("index") is None and s.get("vol_index") is None:
            raise _bad(p, "needs 'index' and/or 'vol_index' (instrument ids with stored prices)")
        vt = s.get("vol_index_threshold")
        if s.get("vol_index") is not None and vt is None:
            raise _bad(f"{p}.vol_index_threshold", "is required with 'vol_index'")
        out["market_condition"] = MarketConditionSettings(
            None if s.get("index") is None else _str(s["index"], f"{p}.index"),
            _num(s.get("drawdown_threshold", 0.10), f"{p}.drawdown_threshold", hi=1.0),
            None if s.get("vol_index") is None else _str(s["vol_index"], f"{p}.vol_index"),
            None if vt is None else _num(vt, f"{p}.vol_index_threshold"),
        )
    else:
        out["market_condition"] = None
    if (s := section("risk_budget")) is not None:
        p = f"{path}.risk_budget"
        _keys(s, {"vol_budget", "te_budget", "contribution_tolerance"}, p)
        vals = {
            k: None if s.get(k) is None else _num(s[k], f"{p}.{k}")
            for k in ("vol_budget", "te_budget", "contribution_tolerance")
        }
        if all(v is None for v in vals.values()):
            raise _bad(p, "needs vol_budget, te_budget and/or contribution_tolerance")
        out["risk_budget"] = RiskBudgetSettings(**vals)
    else:
        out["risk_budget"] = None
    return SignalSettings(**out)


def _policy(obj: Any, path: str) -> GatePolicy:
    o = _obj(obj, path)
    _keys(o, {"cooldown_hours", "suppress_market_closed", "suppress_open_orders", "calendar"}, path)
    d = GatePolicy()
    sources = o.get("suppress_market_closed", sorted(d.suppress_market_closed))
    if sources is True:
        sources = list(SOURCES)
    elif sources is False or sources is None:
        sources = []
    if not isinstance(sources, list):
        raise _bad(f"{path}.suppress_market_closed", f"must be a list of {list(SOURCES)}")
    for i, src in enumerate(sources):
        if src not in SOURCES:
            raise _bad(f"{path}.suppress_market_closed[{i}]", f"must be one of {list(SOURCES)}")
    soo = o.get("suppress_open_orders", d.suppress_open_orders)
    if not isinstance(soo, bool):
        raise _bad(f"{path}.suppress_open_orders", "must be true or false")
    return GatePolicy(
        timedelta(hours=_num(o.get("cooldown_hours", 0), f"{path}.cooldown_hours", hi=24 * 366)),
        frozenset(sources),
        soo,
        parse_calendar(o["calendar"], f"{path}.calendar") if "calendar" in o else d.calendar,
    )


TOP_KEYS = (*BAND_LEVELS, "account", "keys", "alerts", "schedules", "signals", "policy")


def parse_config(obj: Any, path: str = "bands") -> MonitoringConfig:
    """Validate a model's ``bands`` JSON (``None`` or ``{}``: every default).

    Raises
    ------
    InvalidInput
        ``fields`` is the dotted path of the bad part, e.g. ``["bands.instrument.relative"]``.
    """
    o = _obj(obj if obj is not None else {}, path)
    _keys(o, TOP_KEYS, path)
    bands: list[Band] = []
    for level in (*BAND_LEVELS, "account"):
        value = o[level] if level in o else DEFAULT_LEVEL_BANDS.get(level)
        bands += _level_bands(level, value, f"{path}.{level}")
    keys = o.get("keys", [])
    if not isinstance(keys, list):
        raise _bad(f"{path}.keys", "must be a list of {level, key, absolute, relative}")
    for i, k in enumerate(keys):
        p = f"{path}.keys[{i}]"
        ko = _obj(k, p)
        lvl = ko.get("level")
        if lvl not in BAND_LEVELS:
            raise _bad(f"{p}.level", f"must be one of {list(BAND_LEVELS)}")
        bands.append(_band_obj(str(lvl), ko, p, _str(ko.get("key"), f"{p}.key")))
    a = _obj(o.get("alerts", {}), f"{path}.alerts")
    _keys(a, {"critical_multiple", "hysteresis"}, f"{path}.alerts")
    alerts = AlertSettings(
        _num(a.get("critical_multiple", 2.0), f"{path}.alerts.critical_multiple", lo=1.0),
        _num(a.get("hysteresis", 0.2), f"{path}.alerts.hysteresis", hi=0.99),
    )
    policy = _policy(o.get("policy", {}), f"{path}.policy")
    scheds = o.get("schedules", [])
    if not isinstance(scheds, list):
        raise _bad(f"{path}.schedules", "must be a list of schedules")
    schedules = tuple(
        _schedule(s, f"{path}.schedules[{i}]", policy.calendar) for i, s in enumerate(scheds)
    )
    ids = [s.id for s, _ in schedules]
    for i, sid in enumerate(ids):
        if sid in ids[:i]:
            raise _bad(f"{path}.schedules[{i}].id", f"duplicate schedule id {sid!r}")
    signals = _signals(o.get("signals", {}), f"{path}.signals")
    return MonitoringConfig(tuple(bands), alerts, schedules, signals, policy)


def parse_trigger_rule(obj: Any, path: str = "trigger_rule") -> RuleDefinition | None:
    """Validate a model's ``trigger_rule`` (``{"name", "priority", "rule"}``, see
    :mod:`rebalancer.domain.rules`) against :data:`KNOWN_SIGNALS`; ``None`` or ``{}``: no rule.

    Raises :class:`InvalidInput` whose ``fields`` is prefixed by ``path``, e.g.
    ``["trigger_rule.rule.all[1].op"]``.
    """
    if obj is None or (isinstance(obj, Mapping) and not obj):
        return None
    try:
        return parse_definition(obj, known_signals=KNOWN_SIGNALS)
    except InvalidInput as exc:
        raise InvalidInput(
            f"{path}.{exc.detail}", [f"{path}.{f}" for f in exc.fields] or [path]
        ) from exc


def validate_model_config(bands: Any, trigger_rule: Any) -> None:
    """Check both JSON documents of a model before it is saved (raises :class:`InvalidInput`)."""
    if bands is not None:
        parse_config(bands)
    parse_trigger_rule(trigger_rule)


def combine(configs: Sequence[tuple[float, MonitoringConfig]]) -> MonitoringConfig:
    """Config of an account with several sleeves: every model's bands and schedules (a schedule
    id once), and alerts, signals and policy of the sleeve with the largest share."""
    if not configs:
        return parse_config({})
    if len(configs) == 1:
        return configs[0][1]
    main = max(configs, key=lambda c: c[0])[1]
    bands = tuple(dict.fromkeys(b for _, c in configs for b in c.bands))
    seen: dict[str, tuple[Schedule, int]] = {}
    for _, c in configs:
        for s, p in c.schedules:
            seen.setdefault(s.id, (s, p))
    return MonitoringConfig(bands, main.alerts, tuple(seen.values()), main.signals, main.policy)
